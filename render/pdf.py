"""superposition.pdf: the essay printed by headless Chromium, when it is installed. It prints the
offline edition, which carries its stylesheet, font and every static figure inside it (in print
the charts give way to those figures), so the page's bytes are all the PDF depends on: it is
cached on them and on Chromium's version."""
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from errors import BuildError
from precompute import cache

NAME = "superposition.pdf"
# Debian's package; $CHROMIUM names another, and CHROMIUM= (empty) builds without the PDF.
CHROMIUM = "/usr/bin/chromium"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--no-pdf-header-footer")  # the header would print the clock and the file's path


def chromium():
    """The Chromium to print with, or None (with the reason) when there is none."""
    path = os.environ.get("CHROMIUM", CHROMIUM)
    found = shutil.which(path) if path else None
    return (found, None) if found else (None, f"no Chromium at {path!r}" if path else
                                        "CHROMIUM is empty")


def write(page, out, cache_dir, chromium, date):
    """Print `page` (an HTML file) to out/superposition.pdf. `date` (YYYY-MM-DD, the build's)
    replaces the clock in the PDF's CreationDate and ModDate: same inputs, same bytes."""
    html = page.read_bytes()
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256(html + version.encode() + date.encode() + " ".join(FLAGS).encode()) \
        .hexdigest()
    arrays = cache.made(Path(cache_dir) / f"pdf-{key[:16]}.npz", key,
                        lambda: {"pdf": np.frombuffer(_print(page, chromium, date), np.uint8)})
    (out / NAME).write_bytes(arrays["pdf"].tobytes())


def _print(page, chromium, date):
    with tempfile.TemporaryDirectory(prefix="superposition-pdf-") as tmp:
        pdf = Path(tmp) / NAME
        cmd = [chromium, *FLAGS, f"--user-data-dir={tmp}/profile", f"--print-to-pdf={pdf}",
               page.resolve().as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            proc = None
        if proc is None or not pdf.is_file():
            why = "timed out" if proc is None else (proc.stderr.strip().splitlines() or ["?"])[-1]
            raise BuildError(chromium, f"could not print the essay to PDF ({why})",
                             "fix Chromium, or build without the PDF: CHROMIUM= python build.py")
        data = pdf.read_bytes()
    # Kept at the same length, so the cross-reference table's byte offsets stay right.
    stamp = f"D:{date.replace('-', '')}000000+00'00'".encode()
    return re.sub(rb"(/(?:CreationDate|ModDate) \()(D:[^)]*)",
                  lambda m: m[1] + stamp.ljust(len(m[2]))[:len(m[2])], data)
