"""How the article and each figure are cited: plain text, BibTeX and Google Scholar's citation_*
meta tags. Figures are cited by their permanent id and versioned address, never by their number,
which changes when figures are reordered."""


def absolute(site_url, path):
    """The address of `path` (relative to the site root): absolute when the site's address is
    known, else relative as given."""
    return f"{site_url.rstrip('/')}/{path}" if site_url else path


def _title(meta):
    # A citation title ends without a period: the style adds its own.
    return f"{meta['title']}: {meta['subtitle']}".rstrip(". ")


def _bibtex(key, meta, build, title, url, note):
    # Double braces keep a corporate author one name (else BibTeX reads "The" as a first name).
    return (f"@misc{{{key},\n  author = {{{{{meta['author']}}}}},\n  title = {{{title}}},\n"
            f"  year = {{{build['year']}}},\n  version = {{{build['version']}}},\n"
            f"  url = {{{url}}},\n  urldate = {{{build['date']}}},\n  note = {{{note}}}\n}}")


def article(meta, build):
    url = absolute(meta.get("site_url"), "")
    title = _title(meta)
    return {
        "url": url,
        "text": f"{meta['author']} ({build['year']}). {title}. Version {build['version']}, "
                f"{build['date']}." + (f" {url}" if url else ""),
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
                f"{sha[:12]}]. In {_title(meta)}. {url}",
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
    return tags
