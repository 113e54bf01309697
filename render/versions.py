"""Carry every published figure version forward into a new build: the previous site's
figures/<id>/v/<hash>/ folders are copied byte for byte, and its manifest's version lists (with
the date each version was first published) are merged into the new records. A citation to a
versioned address therefore keeps resolving to the same bytes after the grid, the code or the
essay change, as long as each deploy is built from the one before."""
import json
import shutil
from pathlib import Path

from errors import BuildError
from render.figure_export import GENERATOR


def previous_site(previous, out):
    """The folder to carry versions from: `--previous DIR` (which must be a site this build
    made), else the current --out when it is one, else None."""
    if previous:
        path = Path(previous)
        if not _manifest(path):
            raise BuildError(path, "not a site built by this project (no figures/manifest.json "
                             f"with generator {GENERATOR!r})",
                             "pass the folder of a previous build, or leave out --previous")
        return path
    out = Path(out)
    return out if _manifest(out) else None


def _manifest(site):
    path = Path(site) / "figures" / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == GENERATOR \
        else None


def carry_forward(previous, out, records):
    """Copy the previous site's version folders into `out` (the old bytes win where a version
    was rebuilt) and merge its version history into `records`, in place."""
    if previous is None:
        return
    old = {f["id"]: f.get("versions", []) for f in _manifest(previous)["figures"]}
    for folder in sorted(Path(previous).glob("figures/*/v/*")):
        if folder.is_dir():
            target = out / folder.relative_to(previous)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder, target)
    for r in records:
        # Versions of figures that left the essay keep their folders; the record keeps history.
        merged = {v["sha256"]: v for v in r["versions"]}
        merged.update({v["sha256"]: v for v in old.get(r["id"], [])})
        r["versions"] = sorted(merged.values(), key=lambda v: (v["date"], v["sha256"]))
