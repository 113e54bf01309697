"""What changed between a figure's published versions, and figures/feed.xml, an Atom feed of
every version. Each version records the parameters it was made with (`params`, beside its date in
the manifest, carried forward with it); the rows that differ come from the versions' own
data.json files, which never change once published."""
import json
import uuid
from xml.sax.saxutils import escape, quoteattr

from render import citation

SHOWN_ROWS = 5  # rows listed per table and direction; the counts give the rest
FEED = "figures/feed.xml"


def record_params(records):
    """Give the current version of each figure its parameters (a version carried forward keeps
    the ones it was published with; one published before versions recorded them has none)."""
    for r in records:
        for v in r["versions"]:
            if v["sha256"] == r["sha256"] and "params" not in v:
                v["params"] = r["params"]


def annotate(out, records):
    """r["changes"]: for every version after the first, what differs from the one before it."""
    for r in records:
        r["changes"] = [diff(out, old, new) for old, new in zip(r["versions"], r["versions"][1:])]


def diff(out, old, new):
    params = None  # unknown when either version did not record its parameters
    if "params" in old and "params" in new:
        params = [{"name": k, "old": old["params"].get(k), "new": new["params"].get(k)}
                  for k in sorted(set(old["params"]) | set(new["params"]))
                  if old["params"].get(k) != new["params"].get(k)]
    a, b = _tables(out, old), _tables(out, new)
    tables = []
    for name in sorted(set(a) | set(b)):
        rows_a, rows_b = _rows(a.get(name, [])), _rows(b.get(name, []))
        set_a, set_b = set(rows_a), set(rows_b)
        removed = [r for r in rows_a if r not in set_b]
        added = [r for r in rows_b if r not in set_a]
        if removed or added:
            tables.append({"name": name, "removed": len(removed), "added": len(added),
                           "columns": _columns(removed + added),
                           "rows": [("removed", json.loads(r)) for r in removed[:SHOWN_ROWS]] +
                                   [("added", json.loads(r)) for r in added[:SHOWN_ROWS]]})
    return {"from": old, "to": new, "params": params, "tables": tables}


def _tables(out, version):
    try:
        return json.loads((out / version["path"] / "data.json").read_text())
    except (OSError, ValueError):
        return {}


def _rows(records):
    return [json.dumps(r, sort_keys=True) for r in records]


def _columns(rows):
    return list(dict.fromkeys(k for r in rows for k in json.loads(r)))


def summary(change):
    """One line of plain text for the feed."""
    parts = []
    if change["params"] is None:
        parts.append("parameters of the earlier version not recorded")
    elif change["params"]:
        parts.append("parameters changed: " + ", ".join(p["name"] for p in change["params"]))
    parts += [f"{t['name']}: {t['added']} rows added, {t['removed']} removed"
              for t in change["tables"]]
    return "; ".join(parts) or "same parameters and data (the chart itself changed)"


def feed(records, meta):
    """Atom 1.0, newest first: one entry per published version of every figure. Ids are
    name-based UUIDs of the versioned path, so they never change; links are absolute when the
    site's address is known, else relative to figures/."""
    site = meta.get("site_url") or ""
    link = lambda path: citation.absolute(site, path) if site else path.removeprefix("figures/")
    uid = lambda path: f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, 'superposition-explained:' + path)}"
    entries = []
    for r in records:
        notes = [None] + r.get("changes", [])
        for v, change in zip(r["versions"], notes):
            text = "first published" if change is None else \
                f"changed from {change['from']['sha256'][:12]}: {summary(change)}"
            entries.append((v["date"], v["sha256"], r, v, text))
    entries.sort(key=lambda e: (e[0], e[1]), reverse=True)
    stamp = lambda date: f"{date}T00:00:00Z"
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             '<feed xmlns="http://www.w3.org/2005/Atom">',
             f"  <title>{escape(meta['title'])}: figure versions</title>",
             f"  <id>{uid(FEED)}</id>",
             f"  <updated>{stamp(max(e[0] for e in entries))}</updated>",
             f"  <author><name>{escape(meta['author'])}</name></author>",
             f"  <link rel=\"self\" href={quoteattr(link(FEED))}/>",
             f"  <link rel=\"alternate\" type=\"text/html\" href={quoteattr(link('figures/index.html'))}/>"]
    for date, sha, r, v, text in entries:
        lines += ["  <entry>",
                  f"    <title>{escape(r['title'].rstrip('.'))} ({r['id']}, version {sha[:12]})</title>",
                  f"    <id>{uid(v['path'])}</id>",
                  f"    <updated>{stamp(date)}</updated>",
                  f"    <link rel=\"alternate\" type=\"text/html\" href={quoteattr(link(v['path'] + 'index.html'))}/>",
                  f"    <summary>{escape(text)} (site version {escape(str(v['version']))})</summary>",
                  "  </entry>"]
    return "\n".join(lines + ["</feed>"]) + "\n"
