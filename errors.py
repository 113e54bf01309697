"""The one error type every stage raises for bad input: it prints as a single line naming the
file (and line, where there is one), what is wrong and how to fix it."""
import html
import re


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


def read_utf8(path):
    """A text input's contents, without the byte-order mark some editors put first (else it
    joins the first line: a heading would not be one). A byte that is not UTF-8, or a control
    character, is a BuildError naming its line."""
    data = path.read_bytes()
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
