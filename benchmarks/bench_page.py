#!/usr/bin/env python3
"""Lighthouse figures of the built site (run `make site` first), served as GitHub Pages serves
it: over http with gzip, here from 127.0.0.1 only. Lighthouse's mobile preset (simulated slow 4G,
4x CPU slowdown) in Debian's headless Chromium, on the essay and two figure pages.

    npm install --prefix /tmp/lh lighthouse@12.2.3      # once; never `playwright install`
    python benchmarks/bench_page.py [--site build/site] [--page index.html ...] [--runs 1]

Lighthouse is found at $LIGHTHOUSE, else /tmp/lh/node_modules/.bin/lighthouse; Chromium at
$CHROME_PATH, else `chromium` on the PATH.
"""
import argparse
import functools
import gzip
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIGHTHOUSE = os.environ.get("LIGHTHOUSE", "/tmp/lh/node_modules/.bin/lighthouse")
PAGES = ["index.html", "figures/phase-diagram/index.html", "figures/superposition-panel/index.html"]
CATEGORIES = ["performance", "accessibility", "best-practices", "seo"]
METRICS = {  # audit id: (label, divisor, decimals, unit)
    "total-blocking-time": ("TBT", 1, 0, " ms"), "interactive": ("TTI", 1000, 1, " s"),
    "first-contentful-paint": ("FCP", 1000, 1, " s"),
    "largest-contentful-paint": ("LCP", 1000, 1, " s"),
    "cumulative-layout-shift": ("CLS", 1, 3, ""),
    "mainthread-work-breakdown": ("main-thread work", 1000, 1, " s"),
    "dom-size": ("DOM elements", 1, 0, ""), "total-byte-weight": ("transferred", 1000, 0, " kB"),
}


class Gzipped(http.server.SimpleHTTPRequestHandler):
    """Every file gzipped when the client accepts it, as GitHub Pages does."""

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            return self.send_error(404)
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Cache-Control", "max-age=600")  # what GitHub Pages sends
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, 6, mtime=0)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def lighthouse(url, chrome):
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([LIGHTHOUSE, url, "--quiet", "--output=json", f"--output-path={report}",
                        f"--only-categories={','.join(CATEGORIES)}",
                        "--chrome-flags=--headless --no-sandbox --disable-gpu"],
                       check=True, env={**os.environ, "CHROME_PATH": chrome})
        return json.loads(report.read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", default=str(ROOT / "build" / "site"))
    ap.add_argument("--page", action="append", help=f"page to measure (default: {', '.join(PAGES)})")
    ap.add_argument("--runs", type=int, default=1, help="runs per page (medians are reported)")
    args = ap.parse_args()
    chrome = os.environ.get("CHROME_PATH") or shutil.which("chromium")
    if not Path(LIGHTHOUSE).is_file() or not chrome:
        sys.exit(f"needs Lighthouse at {LIGHTHOUSE} (set $LIGHTHOUSE, or: npm install --prefix "
                 f"/tmp/lh lighthouse@12.2.3) and Chromium ($CHROME_PATH)")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Gzipped, directory=args.site))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for page in args.page or PAGES:
            reports = [lighthouse(f"http://127.0.0.1:{server.server_port}/{page}", chrome)
                       for _ in range(args.runs)]
            median = lambda get: statistics.median(get(r) for r in reports)
            scores = "  ".join(f"{c} {median(lambda r: r['categories'][c]['score']) * 100:.0f}"
                               for c in CATEGORIES)
            print(f"{page}: {scores}")
            print("  " + ", ".join(f"{label} {median(lambda r: r['audits'][a]['numericValue']) / div:,.{digits}f}{unit}"
                                   for a, (label, div, digits, unit) in METRICS.items()))
            failed = sorted({ref["id"] for r in reports for c in CATEGORIES[1:]
                             for ref in r["categories"][c]["auditRefs"]
                             if ref["weight"] and r["audits"][ref["id"]]["score"] is not None
                             and r["audits"][ref["id"]]["score"] < 1})
            if failed:
                print("  failing audits: " + ", ".join(failed))
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
