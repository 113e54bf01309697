"""The one error type every stage raises for bad input: it prints as a single line naming the
file (and line, where there is one), what is wrong and how to fix it."""


class BuildError(Exception):
    def __init__(self, path, message, fix, line=None):
        self.path, self.line, self.message, self.fix = str(path), line, message, fix
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}; {fix}")


def line_of(text, needle, start=1):
    """1-based line of the first occurrence of `needle` in `text` at or after line `start`."""
    lines = text.splitlines()
    for i in range(start - 1, len(lines)):
        if needle in lines[i]:
            return i + 1
    return None
