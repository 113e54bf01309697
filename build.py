#!/usr/bin/env python3
"""Build the site: grid config -> trained toy models -> figure data and Vega-Lite specs ->
essay and figure pages -> build/site/, swapped into place only when the whole build succeeded.

    python build.py [--out DIR] [--grid FILE] [--device cpu|cuda] [--check]
"""
import argparse
import ctypes
import datetime
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from errors import BuildError  # noqa: E402
from precompute import config, figures, models, sae  # noqa: E402
from render import bibliography, citation, essay, figure_export, pages, versions  # noqa: E402

CONTENT = ROOT / "content"
# Every site this build writes carries this file; --out only ever replaces a folder that has it.
MARKER = ".superposition-site"
META_KEYS = ("title", "subtitle", "kicker", "author", "description", "date")


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)

    # 1. Read and check every input before any training, the output folder first.
    check_out(args.out, protected=[ROOT, Path(args.content), Path(args.cache)])
    grid = config.load_grid(args.grid)
    check_families(grid)
    content = Path(args.content)
    meta = read_meta(content / "meta.toml")
    meta["site_url"] = site_url(args, meta)
    bib = bibliography.load(content / "references.bib")
    essay_path = content / "essay.md"
    essay_text = read_text(essay_path)
    placed, _ = essay.scan(essay_path, essay_text, figures.ids(), bib)
    if args.check:
        print(f"ok: {grid.path.name} ({sum(len(f.instances) for f in grid.families.values())} "
              f"models in {len(grid.families)} families), {essay_path.name}, "
              f"{len(bib)} references, {len(figures.ids())} figure ids")
        return 0
    build = build_info(args)

    # 2. Train every family of the grid (or take it from the cache).
    device = resolve_device(args.device)
    cache_dir = Path(args.cache)
    trained = {}
    for name, family in grid.families.items():
        t = time.perf_counter()
        trained[name] = models.trained_family(family, grid.train, device, cache_dir,
                                              progress=not args.quiet, log=log)
        log(f"{name}: {len(family.instances)} models ({how_made(trained[name], t)})")
    for name, sweep in grid.sae.items():
        t = time.perf_counter()
        saes = sae.trained_saes(sweep, trained[name], grid.sae_train, device, cache_dir, log=log)
        trained[f"sae.{name}"] = saes
        log(f"sae.{name}: {len(saes)} sparse autoencoders ({how_made(saes, t)})")

    # 3. Figures from the models; the essay around them. All into a staging folder.
    figs = {f.id: f for f in figures.build_all(trained)}
    env = pages.environment()
    previous = versions.previous_site(args.previous or os.environ.get("PREVIOUS_SITE"), args.out)
    with staging(Path(args.out)) as out:
        order = placed + [i for i in figs if i not in placed]  # unplaced figures number last
        records = [figure_export.export(figs[i], n + 1, out, meta, build)
                   for n, i in enumerate(order)]
        versions.carry_forward(previous, out, records)
        by_id = {r["id"]: r for r in records}
        (out / "figures" / "manifest.json").write_text(figure_export.manifest(records))
        pages.write_assets(out, cache_dir)
        for family, tr in trained.items():
            write_json(out / "data" / "models" / f"{family}.json",
                       {"family": family, "config": family_config(tr, grid), "models": tr.records()})
        common = {"meta": meta, "build": build, "page_description": meta["description"]}
        block = lambda root, inline: lambda fid, number: pages.render(
            env, "figure_block.html", fig=by_id[fid], root=root, inline=inline, **common)
        article = citation.article(meta, build)
        for inline in (None, pages.inline_assets(cache_dir)):
            # The offline edition links to other pages only where it knows their address.
            root = offline_root(meta) if inline else ""
            doc = essay.render(essay_path, essay_text, set(figs), bib,
                               {i: f.facts for i, f in figs.items()}, block(root, inline))
            name = "superposition-offline.html" if inline else "index.html"
            (out / name).write_text(pages.render(
                env, "essay.html", body=doc.html, toc_html=pages.toc_html(doc.toc),
                references=[bib[k] for k in doc.citations], cited=doc.cited, specs=[by_id[i] for i in doc.figure_order],
                reading_minutes=max(1, round(doc.words / 230)), citation=article,
                canonical=article["url"] if meta["site_url"] else None,
                og_image=og_image(meta, root, f"figures/{doc.figure_order[0]}/figure.png"),
                root=root, inline=inline, **common))
        for r in records:
            (out / "figures" / r["id"] / "index.html").write_text(pages.render(
                env, "figure.html", fig=r, figure_html=block("../../", None)(r["id"], r["number"]),
                specs=[r], root="../../", inline=None, citation=r["citation"],
                canonical=canonical(meta, f"figures/{r['id']}/"),
                og_image=og_image(meta, "../../", f"figures/{r['id']}/figure.png"),
                provenance={"code_hash": models.code_hash(), "families":
                            figure_export.provenance_families(figs[r["id"]], trained, grid)},
                **common))
            page = out / r["version_path"] / "index.html"
            if not page.exists():  # a carried-forward version keeps its page as published
                page.write_text(pages.render(
                    env, "figure_version.html", fig=r, root="../../../../", inline=None, specs=[],
                    citation=r["citation"], canonical=canonical(meta, r["version_path"]),
                    og_image=og_image(meta, "../../../../", r["version_path"] + "figure.png"),
                    **common))
        (out / "figures" / "index.html").write_text(pages.render(
            env, "figures_index.html", figures=records, specs=[], root="../", inline=None,
            citation=None, canonical=canonical(meta, "figures/"),
            og_image=og_image(meta, "../", f"figures/{order[0]}/figure.png"), **common))
        (out / "404.html").write_text(pages.render(
            env, "404.html", specs=[], root=offline_root(meta), inline=pages.inline_style(), citation=None,
            canonical=None, og_image=og_image(meta, None, f"figures/{order[0]}/figure.png"),
            **common))
        (out / ".nojekyll").write_text("")
        (out / MARKER).write_text("made by superposition-explained's build.py; "
                                  "a later build may replace this folder\n")
        size, packed = site_size(out)

    fresh = sum(not t.from_cache for t in trained.values())
    print(f"built {args.out}/: {sum(len(t) for t in trained.values())} models in "
          f"{len(trained)} families ({fresh} trained, {len(trained) - fresh} from cache), "
          f"{len(records)} figures, {len(records) + 3} pages, {size / 1e6:.1f} MB "
          f"({packed / 1e6:.1f} MB gzipped), {time.perf_counter() - started:.0f} s")
    return 0


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "build" / "site"), help="output folder")
    p.add_argument("--grid", default=str(config.DEFAULT_GRID), help="grid config (TOML)")
    p.add_argument("--content", default=str(CONTENT), help="folder of essay.md, references.bib, meta.toml")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--check", action="store_true", help="validate all inputs, train nothing")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--cache", default=str(ROOT / "build" / "cache"), help="trained-model cache")
    p.add_argument("--version", help="version string (default: the git commit)")
    p.add_argument("--date", help="build date YYYY-MM-DD (default: the git commit's date)")
    p.add_argument("--site-url", help="published address, for absolute citations and links "
                   "(default: $SITE_URL, else meta.toml's site_url)")
    p.add_argument("--previous", help="previously published site whose figure versions to carry "
                   "forward (default: $PREVIOUS_SITE, else --out when it is a site this build made)")
    return p.parse_args(argv)


def check_families(grid):
    for table, fig in figures.required_families().items():
        kind, _, name = table.rpartition(".")
        if name not in (grid.sae if kind == "sae" else grid.families):
            header = f"[sae.{name}]" if kind == "sae" else f"[family.{name}]"
            raise BuildError(grid.path, f"no {header}, which figure '{fig}' needs",
                             f"add {header} (see precompute/grid.toml)")


def how_made(result, started):
    return "cache" if result.from_cache else f"trained in {time.perf_counter() - started:.0f} s"


def read_text(path):
    if not path.is_file():
        raise BuildError(path, "content file missing", "restore it (git checkout -- content/)")
    return path.read_text()


def read_meta(path):
    try:
        meta = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as e:
        raise BuildError(path, f"not valid TOML ({e})", "fix the syntax") from None
    for key in META_KEYS:
        if not isinstance(meta.get(key), str):
            raise BuildError(path, f"missing '{key}'", f'add {key} = "..."')
    return meta


def build_info(args):
    """Version and date from the git commit (or flags), never the clock: same inputs, same bytes."""
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    version = args.version or git("rev-parse", "--short=12", "HEAD") or "unversioned"
    date = args.date or git("log", "-1", "--format=%cs") or "1970-01-01"
    try:
        datetime.date.fromisoformat(date)
    except ValueError:
        raise BuildError("--date", f"{date!r} is not a date", "use YYYY-MM-DD") from None
    return {"version": version, "date": date, "year": date[:4]}


def resolve_device(device):
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise BuildError("--device cuda", "no CUDA device is available", "use --device cpu")
    return device


def family_config(tr, grid):
    if isinstance(tr, sae.TrainedSAEs):
        return {"name": f"sae.{tr.sweep.family}", "spec": tr.sweep.spec,
                "train": vars(grid.sae_train), "cache_key": tr.key, "training_code": sae.code_hash()}
    return {"name": tr.family.name, "title": tr.family.title, "spec": tr.family.spec,
            "m": tr.family.m, "activation": tr.family.activation, "seeds": tr.family.seeds,
            "train": vars(grid.train), "cache_key": tr.key, "training_code": models.code_hash()}


def site_url(args, meta):
    """The published address: --site-url, else $SITE_URL (the Pages workflow sets it), else
    meta.toml's site_url; empty means unknown, and links stay relative."""
    url = args.site_url or os.environ.get("SITE_URL") or meta.get("site_url") or ""
    if url and not url.startswith(("https://", "http://")):
        raise BuildError("--site-url", f"{url!r} is not an http(s) address",
                         "give the full address, e.g. https://USER.github.io/REPO")
    return url.rstrip("/")


def offline_root(meta):
    """Where the offline edition's links to other pages point: the published site, or nowhere."""
    return meta["site_url"] + "/" if meta["site_url"] else None


def canonical(meta, path):
    return citation.absolute(meta["site_url"], path) if meta["site_url"] else None


def og_image(meta, root, path):
    """Absolute when the site's address is known; else relative to the page (or none)."""
    if meta["site_url"]:
        return citation.absolute(meta["site_url"], path)
    return None if root is None else root + path


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, sort_keys=True, separators=(",", ":")))


def site_size(out):
    files = [p for p in out.rglob("*") if p.is_file()]
    raw = sum(p.stat().st_size for p in files)
    packed = sum(len(gzip.compress(p.read_bytes(), mtime=0)) for p in files)
    return raw, packed


def check_out(out, protected):
    """Refuse an --out that the build may not replace: one it cannot prove it made (no MARKER),
    a file, the filesystem root, the home folder, or any folder that is, holds or lies inside
    one of `protected` (the repository, the content, the cache). Nothing is touched here."""
    if not str(out).strip():
        raise BuildError("--out", "the output folder is empty (the current folder)",
                         "pass a folder the build may own, e.g. --out build/site")
    target = Path(out).expanduser().resolve()
    refuse = lambda why: BuildError(target, f"--out {why}; the build replaces its output whole",
                                    "pass a new or empty folder, e.g. --out build/site")
    if target == Path(target.anchor) or target == Path.home().resolve():
        raise refuse("is the filesystem root or the home folder")
    for p in (Path(p).resolve() for p in protected):
        if target == p or target in p.parents:
            raise refuse(f"is or holds {p}")
        if p in target.parents and p != ROOT:
            raise refuse(f"lies inside {p}")
    if target.exists() and not target.is_dir():
        raise refuse("is a file")
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise refuse(f"is a non-empty folder without {MARKER}, so this build did not make it")
    parent = next(p for p in target.parents if p.exists())
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BuildError(parent, "the output's folder is not writable",
                         "pass an --out in a folder you can write to")


@contextmanager
def staging(target):
    """Yield an empty folder beside `target`; on success swap it in, on any failure or signal
    remove it, leaving the previous site byte for byte as it was."""
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(target)
    tmp = target.with_name(f".{target.name}.staging-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    # Both signals abort into the cleanup below, even where SIGINT was inherited as ignored
    # (a build started as a background job).
    old = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield tmp
        swap(tmp, target)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        shutil.rmtree(tmp, ignore_errors=True)


def remove_dead_staging(target):
    """A killed build (SIGKILL) leaves .NAME.staging-PID beside the site: remove those whose
    process is gone. A live PID is another build at work, so its folder stays."""
    for leftover in target.parent.glob(f".{target.name}.staging-*"):
        pid = leftover.name.rpartition("-")[2]
        if pid.isdigit() and leftover.is_dir() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def swap(new, target):
    """Put `new` at `target`: one atomic exchange (Linux renameat2) where possible."""
    if not target.exists():
        os.rename(new, target)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    exchange = getattr(libc, "renameat2", None)
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if exchange and exchange(AT_FDCWD, bytes(new), AT_FDCWD, bytes(target), RENAME_EXCHANGE) == 0:
        return  # `new` now holds the old site, removed by the caller
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: nothing written; the previous site is untouched", file=sys.stderr)
        sys.exit(130)
