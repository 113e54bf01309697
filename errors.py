"""The one error type every stage raises for bad input: it prints as a single line naming the
file (and line, where there is one), what is wrong and how to fix it."""


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


def read_utf8(path):
    """A text input's contents; a byte that is not UTF-8 is a BuildError naming its line."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise BuildError(path, f"byte {e.object[e.start]:#x} is not UTF-8",
                         "save the file as UTF-8", line) from None
