#!/usr/bin/env python3
"""Page weight and render time of the built essay (run `make site` first): the compressed bytes
of the page and everything it loads, as GitHub Pages serves them (gzip), and the time from
navigation to every chart drawn in headless Chromium, opened from file://.

    python benchmarks/bench_page.py [--site build/site] [--runs 5]
"""
import argparse
import gzip
import shutil
import statistics
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", default=str(ROOT / "build" / "site"))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    index = Path(args.site) / "index.html"
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(
            profile, executable_path=shutil.which("chromium"), args=FLAGS)
        loaded, times = set(), []
        for _ in range(args.runs):
            page = browser.new_page()
            page.on("request", lambda r: loaded.add(r.url))
            page.goto(index.as_uri())
            page.wait_for_function(
                "document.documentElement.getAttribute('data-figures') === 'rendered'")
            times.append(page.evaluate("performance.now()"))  # ms since navigation start
            page.close()
        browser.close()
    files = [Path(u[len("file://"):]) for u in sorted(loaded) if u.startswith("file://")]
    raw = sum(f.stat().st_size for f in files)
    packed = sum(len(gzip.compress(f.read_bytes(), 9, mtime=0)) for f in files)
    for f in files:
        print(f"  {f.relative_to(index.parent)}: {f.stat().st_size / 1e3:,.0f} kB "
              f"({len(gzip.compress(f.read_bytes(), 9, mtime=0)) / 1e3:,.0f} kB gzipped)")
    print(f"essay page with all figures: {len(files)} files, {raw / 1e6:.2f} MB, "
          f"{packed / 1e6:.2f} MB gzipped (target: under 2 MB)")
    print(f"every chart rendered after {statistics.median(times):.0f} ms (median of {args.runs}; "
          f"min {min(times):.0f}, max {max(times):.0f}; target: under 1500 ms)")


if __name__ == "__main__":
    main()
