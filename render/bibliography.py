"""Read content/references.bib into validated entries and format them for the page."""
from dataclasses import dataclass
from pathlib import Path

import bibtexparser
from markupsafe import escape

from errors import BuildError

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


def _clean(value):
    return " ".join(value.replace("{", "").replace("}", "").split())


def load(path):
    path = Path(path)
    if not path.is_file():
        raise BuildError(path, "bibliography not found", "create it or restore it from git")
    text = path.read_text()
    library = bibtexparser.parse_string(text)
    for block in library.failed_blocks:
        raise BuildError(path, "malformed BibTeX entry", "check its braces, commas and key",
                         block.start_line + 1)
    entries = {}
    for e in library.entries:
        fields = {f.key.lower(): _clean(str(f.value)) for f in e.fields}
        for name in REQUIRED:
            if not fields.get(name):
                raise BuildError(path, f"entry '{e.key}' is missing '{name}'",
                                 f"add {name} = {{...}} to it", e.start_line + 1)
        entries[e.key] = Entry(e.key, fields, e.start_line + 1)
    return entries
