"""The one error type every stage raises for bad input: it prints as a single line naming the
file (and line, where there is one), what is wrong and how to fix it."""
import html
import os
import re
import stat
from pathlib import Path


class BuildError(Exception):
    def __init__(self, path, message, fix, line=None):
        self.path, self.line, self.message, self.fix = str(path), line, message, fix
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}; {fix}")

    def __reduce__(self):  # rebuilt from its parts when it comes back from a training worker
        return BuildError, (self.path, self.message, self.fix, self.line)


def line_of(text, needle, start=1):
    """1-based line of the first occurrence of `needle` in `text` at or after line `start`."""
    lines = text.splitlines()
    for i in range(start - 1, len(lines)):
        if needle in lines[i]:
            return i + 1
    return None


# Control characters that are not text (tab, \n, \r and form feed are): a NUL would reach the page.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


# bytes: our inputs are under 50 KB, and the essay's conversion time grows faster than its length
MAX_TEXT = 1_000_000


def read_utf8(path, missing):
    """A text input's contents, without the byte-order mark some editors put first (else it
    joins the first line: a heading would not be one). Only a regular file is read, at most
    MAX_TEXT bytes (a pipe would wait forever, /dev/zero never end); `missing` is the (message,
    fix) where there is nothing at `path`. A byte that is not UTF-8, or a control character, is
    a BuildError naming its line."""
    path = Path(path)
    if not path.exists():
        raise BuildError(path, *missing)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # non-blocking: a pipe must not stall the open
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BuildError(path, "is not a regular file (a folder, pipe or device)",
                         "put the file itself there")
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_TEXT + 1)
    if len(data) > MAX_TEXT:
        raise BuildError(path, f"is larger than {MAX_TEXT:,} bytes",
                         "an input this large is a mistake: trim it")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise BuildError(path, f"byte {e.object[e.start]:#x} is not UTF-8",
                         "save the file as UTF-8", data[:e.start].count(b"\n") + 1) from None
    bad = CONTROL.search(text)
    if bad:
        raise BuildError(path, f"control character U+{ord(bad.group()):04X} is not text",
                         "delete it (editors may show it as ^@ or not at all)",
                         text.count("\n", 0, bad.start()) + 1)
    return text



def toml_error(path, text, e):
    """A tomllib error as a BuildError at its line: tomllib gives the place only inside its
    message ("Invalid value (at line 3, column 7)", or "at end of document": the last line)."""
    m = re.fullmatch(r"(.*) \(at (?:line (\d+), column (\d+)|end of document)\)", str(e))
    what, line, column = m.groups() if m else (str(e), None, None)
    return BuildError(path, f"not valid TOML: {what[0].lower()}{what[1:]}"
                      + (f" at column {column}" if column else ""),
                      "fix the syntax there", int(line or text.count("\n") + 1))


SAFE_SCHEMES = ("http", "https", "mailto")


def unsafe_address(url):
    """Why `url` may not be the address of a link or image the build writes, or None: the one
    check of every address from the inputs (essay links and \\href, the bibliography,
    meta.toml): http(s), mailto or relative to the site, never javascript:, data:, vbscript: or
    another scheme. Read as a browser reads it (entities decoded, spaces and control
    characters gone, any case), so `JaVa script&#58;` is caught too."""
    read = re.sub(r"[\x00-\x20]", "", html.unescape(url)).lower()
    scheme = re.match(r"([a-z][a-z0-9+.-]*):", read)
    if scheme and scheme.group(1) not in SAFE_SCHEMES:
        return f"address {url[:60]!r} uses the {scheme.group(1)}: scheme"
    return None
