"""Carry every published figure version forward into a new build: the previous site's
figures/<id>/v/<hash>/ folders are copied byte for byte, and its manifest's version lists (with
the date each version was first published) are merged into the new records. A citation to a
versioned address therefore keeps resolving to the same bytes after the grid, the code or the
essay change, as long as each deploy is built from the one before.

The previous site is an input like any other and is checked before training: its manifest must
have the schema the build writes, and its version folders may hold only regular files of the
site itself. A previous site that fails the check stops the build; never a quiet fresh start,
which would drop every published version."""
import datetime
import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from errors import BuildError, line_of
from render.figure_export import GENERATOR, version_path

MANIFEST = Path("figures") / "manifest.json"
ID = re.compile(r"[a-z0-9][a-z0-9-]*\Z")  # as figure modules name their figures
SHA256, HASH12, DATE = (re.compile(p) for p in (r"[0-9a-f]{64}\Z", r"[0-9a-f]{12}\Z",
                                                 r"\d{4}-\d{2}-\d{2}\Z"))
VERSION_KEYS = {"sha256", "path", "date", "version"}
OPTIONAL_VERSION_KEYS = {"params"}  # recorded since versions were compared; older ones lack it
RESTORE = ("restore it from the published site (e.g. the site-archive branch); to start afresh "
           "without its published versions, delete that site yourself")


@dataclass
class Previous:
    """A checked previous site: each figure id's version history, every version folder
    (relative to the site) and the file to copy for each path below them."""
    path: Path
    history: dict
    folders: list
    files: dict


def previous_site(previous, out):
    """The checked site to carry versions from: `--previous DIR` (which must be a site this build
    made), else `out`, the --out folder when it holds a site this build made (else None)."""
    if previous:
        path = Path(previous)
        if not os.path.lexists(path / MANIFEST):
            raise BuildError(path, "not a site built by this project (no figures/manifest.json "
                             f"with generator {GENERATOR!r})",
                             "pass the folder of a previous build, or leave out --previous")
        return _checked(path)
    return _checked(Path(out)) if out else None


def _checked(site):
    root, manifest = site.resolve(), site / MANIFEST
    if not os.path.lexists(manifest):
        raise BuildError(manifest, "missing, so the figure versions the site published would "
                         "be lost", RESTORE)
    history = _history(manifest, _regular(manifest, root).read_bytes())
    folders, files = [], {}
    for folder in sorted(root.glob("figures/*/v/*")):
        rel = folder.relative_to(root)
        if folder.resolve() != folder or not folder.is_dir() or not ID.match(rel.parts[1]) \
                or not HASH12.match(folder.name):
            raise BuildError(site / rel, "is not a published version folder (a real folder "
                             "figures/<id>/v/<12 hex digits>/)", "move it out of the site")
        folders.append(rel)
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                if not stat.S_ISDIR(p.lstat().st_mode):  # os.walk goes into real folders only
                    files[p.relative_to(root)] = _regular(site / p.relative_to(root), root)
    for fid, versions in history.items():
        for v in versions:
            if Path(v["path"]) not in folders:
                raise BuildError(site / MANIFEST, f"lists version {v['sha256'][:12]} of figure "
                                 f"'{fid}', but {v['path']} is missing from the site",
                                 "restore that folder from the published site (e.g. the "
                                 "site-archive branch)")
    return Previous(site, history, folders, files)


def _regular(path, root):
    """The regular file `path` stands for, itself or through a link that stays inside `root`."""
    real = path.resolve()
    if root not in real.parents:
        raise BuildError(path, f"is a link to {real}, outside the previous site, whose files "
                         "would be published", "replace the link with the file itself")
    try:
        mode = os.stat(real).st_mode
    except OSError:
        mode = 0  # a broken link
    if not stat.S_ISREG(mode):
        raise BuildError(path, "is missing or not a regular file (a folder link, FIFO, socket, "
                         "device or broken link)", "replace it with the file it stands for")
    return real


def _history(path, blob):
    """{figure id: versions} from the previous manifest, checked against what the build writes."""
    try:
        text = blob.decode("utf-8")
        manifest = json.loads(text)
    except ValueError as e:  # also a byte that is not UTF-8
        raise BuildError(path, f"not valid JSON ({getattr(e, 'msg', e)}), so the figure versions "
                         "it lists cannot be carried forward", RESTORE,
                         getattr(e, "lineno", None)) from None
    if not isinstance(manifest, dict) or manifest.get("generator") != GENERATOR:
        raise BuildError(path.parent.parent, "not a site built by this project (no "
                         f"figures/manifest.json with generator {GENERATOR!r})",
                         "pass the folder of a previous build, or leave out --previous")
    bad = lambda message, value=None: BuildError(
        path, message, RESTORE, line_of(text, json.dumps(value)) if isinstance(value, str) else None)
    figures = manifest.get("figures")
    if not isinstance(figures, list):
        raise bad("'figures' is not a list of figures")
    history = {}
    for f in figures:
        fid = f.get("id") if isinstance(f, dict) else None
        if not isinstance(fid, str) or not ID.match(fid) or fid in history:
            raise bad(f"a figure has a missing, malformed or repeated id ({fid!r})", fid)
        versions = f.get("versions")
        if not isinstance(versions, list) or not versions:
            raise bad(f"figure '{fid}' has no list of versions", fid)
        for v in versions:
            keys = set(v) if isinstance(v, dict) else set()
            if not VERSION_KEYS <= keys <= VERSION_KEYS | OPTIONAL_VERSION_KEYS:
                raise bad(f"a version of figure '{fid}' does not have the keys "
                          f"{', '.join(sorted(VERSION_KEYS))} (params optional) ({v!r:.80})", fid)
            sha, date = v["sha256"], v["date"]
            if not isinstance(sha, str) or not SHA256.match(sha):
                raise bad(f"a version of figure '{fid}' has sha256 {sha!r}, not 64 hex digits", sha)
            if v["path"] != version_path(fid, sha):
                raise bad(f"version {sha[:12]} of figure '{fid}' has path {v['path']!r}, not "
                          f"{version_path(fid, sha)!r}", v["path"])
            if not isinstance(date, str) or not DATE.match(date) or not _is_date(date):
                raise bad(f"version {sha[:12]} of figure '{fid}' has date {date!r}, not "
                          "YYYY-MM-DD", date if isinstance(date, str) else sha)
            if not isinstance(v.get("params", {}), dict):
                raise bad(f"version {sha[:12]} of figure '{fid}' has params that are not a "
                          "table", sha)
            if not isinstance(v["version"], str):
                raise bad(f"version {sha[:12]} of figure '{fid}' has a site version that is not a "
                          "string", sha)
        history[fid] = versions
    return history


def _is_date(text):
    try:
        return bool(datetime.date.fromisoformat(text))
    except ValueError:
        return False


def carry_forward(previous, out, records):
    """Copy the previous site's version folders into `out` (the old bytes win where a version
    was rebuilt) and merge its version history into `records`, in place."""
    if previous is None:
        return
    for folder in previous.folders:
        shutil.rmtree(out / folder, ignore_errors=True)
        (out / folder).mkdir(parents=True)
    for rel, source in previous.files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / rel)
    for r in records:
        # Versions of figures that left the essay keep their folders; the record keeps history.
        merged = {v["sha256"]: v for v in r["versions"]}
        merged.update({v["sha256"]: v for v in previous.history.get(r["id"], [])})
        r["versions"] = sorted(merged.values(), key=lambda v: (v["date"], v["sha256"]))
