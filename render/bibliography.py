"""Read content/references.bib into validated entries and format them for the page."""
import re
from dataclasses import dataclass
from pathlib import Path

import bibtexparser
from bibtexparser.model import DuplicateBlockKeyBlock
from markupsafe import escape
from pylatexenc.latex2text import LatexNodes2Text

from errors import BuildError, read_utf8, unsafe_address

REQUIRED = ("author", "title", "year", "url")


@dataclass(frozen=True)
class Entry:
    key: str
    fields: dict
    line: int

    def authors(self):
        names = [a.strip() for a in self.fields["author"].replace("\n", " ").split(" and ")]
        surnames = [n.split(",")[0] if "," in n else n.split()[-1] for n in names]
        if names[-1].lower() == "others" or len(names) > 5:
            return f"{surnames[0]} et al."
        return ", ".join(surnames[:-1]) + (" & " if len(surnames) > 1 else "") + surnames[-1]

    def venue(self):
        f = self.fields
        return f.get("journal") or f.get("booktitle") or f.get("publisher") or f.get("howpublished", "")

    def text(self):
        """One line of plain text, for previews and plain citations."""
        venue = f" {self.venue()}." if self.venue() else ""
        return f"{self.authors()} ({self.fields['year']}). {self.fields['title']}.{venue}"

    def html(self):
        venue = f" <span class=\"venue\">{escape(self.venue())}</span>." if self.venue() else ""
        return (f"{escape(self.authors())} ({escape(self.fields['year'])}). "
                f"<a href=\"{escape(self.fields['url'])}\" rel=\"noopener\">"
                f"{escape(self.fields['title'])}</a>.{venue}")


def _well_formed(raw):
    """True if a raw field value is one or more {braced}, "quoted" or bare pieces joined by #:
    a missing comma leaves the next field glued to the value ("{T} journal = {J}")."""
    i, raw = 0, raw.strip()
    while True:
        if raw.startswith("{", i) or raw.startswith('"', i):
            close, depth, i = "}" if raw[i] == "{" else '"', 0, i + 1
            while i < len(raw) and not (raw[i] == close and depth == 0):
                depth += {"{": 1, "}": -1}.get(raw[i], 0) if close == '"' or raw[i] != "}" \
                    else -1
                i += 1
            if i == len(raw):
                return False
            i += 1
        else:
            bare = re.match(r"[\w.:+-]+", raw[i:])
            if not bare:
                return False
            i += bare.end()
        rest = re.match(r"\s*(#\s*)?", raw[i:])
        i += rest.end()
        if i == len(raw):
            return not rest.group(1)
        if not rest.group(1):
            return False


def _clean(name, value):
    """A field as the page shows it: TeX's accents and commands as the text they stand for
    (M\\"uller as Müller, \\emph{x} as x), braces gone. An address keeps its characters: to TeX
    a % or ~ in it would be a comment or a space."""
    if name != "url":
        value = LatexNodes2Text().latex_to_text(value)
    return " ".join(value.replace("{", "").replace("}", "").split())


def load(path):
    path = Path(path)
    text = read_utf8(path, ("bibliography not found", "create it or restore it from git"))
    library = bibtexparser.parse_string(text)
    if not library.entries and not library.failed_blocks and text.strip():
        raise BuildError(path, "holds no BibTeX entries", "write entries as @article{key, ...}", 1)
    for block in library.failed_blocks:
        if isinstance(block, DuplicateBlockKeyBlock):
            raise BuildError(path, f"duplicate BibTeX key '{block.key}'",
                             "rename one of the entries or delete the copy", block.start_line + 1)
        raise BuildError(path, "malformed BibTeX entry", "check its braces, commas and key",
                         block.start_line + 1)
    # The default parse strips each value's enclosing braces; the raw parse keeps them to check.
    for e in bibtexparser.parse_string(text, parse_stack=[]).entries:
        for f in e.fields:
            if not _well_formed(str(f.value)):
                raise BuildError(path, f"field '{f.key}' of entry '{e.key}' does not parse "
                                 "cleanly (a missing comma?)",
                                 "end every field with a comma and balance its braces",
                                 f.start_line + 1)
    entries = {}
    for e in library.entries:
        fields = {f.key.lower(): _clean(f.key.lower(), str(f.value)) for f in e.fields}
        for name in REQUIRED:
            if not fields.get(name):
                raise BuildError(path, f"entry '{e.key}' is missing '{name}'",
                                 f"add {name} = {{...}} to it", e.start_line + 1)
        problem = unsafe_address(fields["url"])
        if problem:
            line = next(f.start_line for f in e.fields if f.key.lower() == "url") + 1
            raise BuildError(path, f"entry '{e.key}': {problem}",
                             "give the work's http(s) address", line)
        entries[e.key] = Entry(e.key, fields, e.start_line + 1)
    return entries
