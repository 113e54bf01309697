"""How the article and each figure are cited: plain text, BibTeX, Google Scholar's citation_*
meta tags and CITATION.cff. Figures are cited by their permanent id and versioned address, never
by their number, which changes when figures are reordered. meta.toml's `doi`, once set, goes into
every one of them."""
import json


def absolute(site_url, path):
    """The address of `path` (relative to the site root): absolute when the site's address is
    known, else relative as given."""
    return f"{site_url.rstrip('/')}/{path}" if site_url else path


def _title(meta):
    # A citation title ends without a period: the style adds its own.
    return f"{meta['title']}: {meta['subtitle']}".rstrip(". ")


def _doi(meta):
    return meta.get("doi") or ""


def _doi_text(meta):
    return f" https://doi.org/{_doi(meta)}" if _doi(meta) else ""


def _bibtex(key, meta, build, title, url, note):
    # Double braces keep a corporate author one name (else BibTeX reads "The" as a first name).
    # A local build knows no address: no url field then (an empty one reads as a broken link).
    fields = [("author", f"{{{meta['author']}}}"), ("title", title), ("year", build["year"]),
              ("version", build["version"]), ("doi", _doi(meta)),
              ("url", url if url.startswith(("http://", "https://")) else ""),
              ("urldate", build["date"]), ("note", note)]
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields if value)
    return f"@misc{{{key},\n{body}\n}}"


def article(meta, build):
    url = absolute(meta.get("site_url"), "")
    title = _title(meta)
    return {
        "url": url,
        "text": f"{meta['author']} ({build['year']}). {title}. Version {build['version']}, "
                f"{build['date']}." + (f" {url}" if url else "") + _doi_text(meta),
        "bibtex": _bibtex("superposition-explained", meta, build, title, url,
                          f"Version {build['version']} of {build['date']}; accessed {build['date']}"),
        "meta": scholar_tags(meta, build, title, url),
    }


def figure(meta, build, fig_id, fig_title, sha, version_path):
    """`version_path`: the figure version's folder relative to the site root."""
    url = absolute(meta.get("site_url"), version_path)
    title = fig_title.rstrip(". ")
    note = f"Figure {fig_id}, spec sha256 {sha}; in {_title(meta)}, version {build['version']}"
    return {
        "url": url,
        "text": f"{meta['author']} ({build['year']}). {title} [figure {fig_id}, version "
                f"{sha[:12]}]. In {_title(meta)}. {url}" + _doi_text(meta),
        "bibtex": _bibtex(f"superposition-fig-{fig_id}", meta, build, title, url, note),
        "meta": scholar_tags(meta, build, title, url),
    }


def scholar_tags(meta, build, title, url):
    """Google Scholar's citation_* tags, as (name, content) pairs."""
    tags = [("citation_title", title), ("citation_author", meta["author"]),
            ("citation_publication_date", build["date"].replace("-", "/")),
            ("citation_online_date", build["date"].replace("-", "/"))]
    if url.startswith(("http://", "https://")):
        tags.append(("citation_public_url", url))
    if _doi(meta):
        tags.append(("citation_doi", _doi(meta)))
    return tags


def pdf_tag(meta, name):
    """citation_pdf_url for the essay's PDF, when the build made one (`name`)."""
    return [("citation_pdf_url", absolute(meta.get("site_url"), name))] if name else []


def references(entries):
    """One citation_reference tag per cited bibliography entry, in Google Scholar's
    "citation_field=value; ..." form (a ';' inside a value would split it, so it becomes ',')."""
    def reference(e):
        f = e.fields
        names = [a.strip() for a in f["author"].split(" and ") if a.strip().lower() != "others"]
        parts = [("citation_title", f["title"]), *(("citation_author", a) for a in names),
                 ("citation_publication_date", f["year"])]
        venue = f.get("journal") or f.get("booktitle")
        if venue:
            parts.append(("citation_journal_title" if "journal" in f else
                          "citation_conference_title", venue))
        if f.get("doi"):
            parts.append(("citation_doi", f["doi"]))
        parts.append(("citation_public_url", f["url"]))
        return "; ".join(f"{k}={v.replace(';', ',')}" for k, v in parts)
    return [("citation_reference", reference(e)) for e in entries]


def cff(meta, build):
    """CITATION.cff for this version (JSON strings are valid YAML scalars, so values need no
    YAML escaping). The build writes it into the site; the repository's copy is the same for a
    release dated meta.toml's date."""
    q = json.dumps
    url = meta.get("site_url") or meta.get("repository_url") or ""
    lines = ["# How to cite this project. The site's \"Cite this article\" block carries the exact "
             "version;", "# each figure page cites the figure by its id and versioned address.",
             "cff-version: 1.2.0",
             "message: \"If you use this explainer or its figures, please cite it as below.\"",
             f"title: {q(_title(meta))}", "type: software", "authors:",
             f"  - name: {q(meta['author'])}", f"version: {q(build['version'])}",
             f"date-released: {q(build['date'])}", "license: MIT"]
    if url:
        lines.append(f"url: {q(url)}")
    if meta.get("repository_url"):
        lines.append(f"repository-code: {q(meta['repository_url'])}")
    if _doi(meta):
        lines.append(f"doi: {q(_doi(meta))}")
    lines += ["keywords:", *(f"  - {k}" for k in KEYWORDS)]
    return "\n".join(lines) + "\n"


KEYWORDS = ("superposition", "polysemanticity", "interpretability", "toy models")


def zenodo(meta):
    """.zenodo.json, which Zenodo's GitHub integration reads when a release is archived (it takes
    this over CITATION.cff); the DOI it mints then goes into meta.toml's `doi`."""
    record = {"title": _title(meta), "description": meta["description"],
              "creators": [{"name": meta["author"]}], "upload_type": "software",
              "license": "MIT", "keywords": list(KEYWORDS)}
    if meta.get("repository_url"):
        record["related_identifiers"] = [{"identifier": meta["repository_url"],
                                          "relation": "isSupplementTo", "scheme": "url"}]
    return json.dumps(record, indent=2, ensure_ascii=False) + "\n"


def source(meta, build, path):
    """A repository file behind a figure (its module, the grid) at the commit that built it:
    linked on the repository's host when repository_url and the commit are known, else shown."""
    repo, commit = meta.get("repository_url", "").rstrip("/"), build.get("commit", "")
    url = f"{repo}/blob/{commit}/{path}" if repo and commit and path else None
    return {"path": path or "(outside the repository)", "url": url}
