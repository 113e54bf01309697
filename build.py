#!/usr/bin/env python3
"""Build the site: grid config -> trained toy models -> figure data and Vega-Lite specs ->
essay and figure pages -> build/site/, swapped into place only when the whole build succeeded.

    python build.py [--out DIR] [--grid FILE] [--device cpu|cuda] [--check]
"""
import argparse
import ctypes
import datetime
import errno
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from errors import BuildError, read_utf8, toml_error, unsafe_address  # noqa: E402
from precompute import config, figures, models, phase_theory, sae  # noqa: E402
from precompute.figures import phase_diagram  # noqa: E402
from render import (bibliography, changes, citation, essay, figure_export, pages, pdf,  # noqa: E402
                    versions)

CONTENT = ROOT / "content"
MARKER = ".superposition-site"  # written into every build's output: proof the build made it
META_KEYS = ("title", "subtitle", "kicker", "author", "description", "date")
OPTIONAL_META_KEYS = ("site_url", "repository_url", "doi")


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)

    # 1. Read and check every input before any training, the output folder first.
    out_dir = check_out(args.out, content=Path(args.content), cache=Path(args.cache))
    check_cache(args.cache)
    grid = config.load_grid(args.grid)
    check_families(grid)
    content = Path(args.content)
    meta = read_meta(content_file(content, "meta.toml"))
    meta["site_url"] = site_url(args, meta)
    bib = bibliography.load(content_file(content, "references.bib"))
    essay_path = content_file(content, "essay.md")
    essay_text = read_text(essay_path)
    placed, _ = essay.scan(essay_path, essay_text, figures.ids(), bib, figures.facts(),
                           meta["allow_raw_html"])
    previous = versions.previous_site(args.previous or os.environ.get("PREVIOUS_SITE"),
                                      out_dir if (out_dir / MARKER).is_file() else None)
    build = build_info(args, meta)
    if args.check:
        print(f"ok: {grid.path.name} ({sum(len(f.instances) for f in grid.families.values())} "
              f"models in {len(grid.families)} families), {essay_path.name}, "
              f"{len(bib)} references, {len(figures.ids())} figure ids")
        return 0

    # 2. Train every family of the grid (or take it from the cache).
    device = resolve_device(args.device)
    cache_dir = Path(args.cache)
    saes = {}

    def beside_training(name, toy):  # what needs a family, as soon as it is ready
        if name in grid.sae:
            t = time.perf_counter()
            saes[name] = sae.trained_saes(grid.sae[name], toy, grid.sae_train, device, cache_dir,
                                          log=log)
            log(f"sae.{name}: {len(saes[name])} sparse autoencoders ({how_made(saes[name], t)})")
        if name == phase_diagram.FAMILY:  # its exact-loss theory, cached for the figure
            phase_theory.solve(toy.family, cache_dir, log)
    trained = models.trained_families(grid.families, grid.train, device, cache_dir,
                                      progress=not args.quiet, log=log, then=beside_training)
    trained.update({f"sae.{name}": saes[name] for name in grid.sae})

    # 3. Figures from the models; the essay around them. All into a staging folder.
    figs = {f.id: f for f in figures.build_all(trained)}
    modules = {m.ID: m for m in figures._modules()}  # the code that made each figure
    env = pages.environment()
    with staging(out_dir) as out:
        order = placed + [i for i in figs if i not in placed]  # unplaced figures number last
        records = [figure_export.export(figs[i], n + 1, out, meta, build, cache_dir)
                   for n, i in enumerate(order)]
        versions.carry_forward(previous, out, records)
        changes.record_params(records)
        changes.annotate(out, records)
        (out / changes.FEED).write_text(changes.feed(records, meta))
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
        printer, no_printer = pdf.chromium()
        notes = figures.fact_notes()
        about = {i: essay.figure_about(f, notes[i]) for i, f in figs.items()}
        for inline in (None, pages.inline_assets(cache_dir)):
            # The offline edition links to other pages only where it knows their address.
            root = offline_root(meta) if inline else ""
            doc = essay.render(essay_path, essay_text, set(figs), bib,
                               {i: f.facts for i, f in figs.items()}, block(root, inline),
                               meta["allow_raw_html"], about)
            name = "superposition-offline.html" if inline else "index.html"
            (out / name).write_text(pages.render(
                env, "essay.html", body=doc.html, toc_html=pages.toc_html(doc.toc),
                references=[bib[k] for k in doc.citations], cited=doc.cited, specs=[by_id[i] for i in doc.figure_order],
                reading_minutes=max(1, round(doc.words / 230)),
                citation={**article, "meta": article["meta"] + citation.references(
                    [bib[k] for k in doc.citations]) + citation.pdf_tag(meta, printer and not inline
                                                                         and pdf.NAME)},
                pdf=printer and not inline and pdf.NAME,
                canonical=article["url"] if meta["site_url"] else None,
                og_image=og_image(meta, root, f"figures/{doc.figure_order[0]}/figure.png"),
                root=root, inline=inline, **common))
        if printer:  # from the offline edition, which holds every static figure
            pdf.write(out / "superposition-offline.html", out, cache_dir, printer, build["date"])
        else:
            log(f"{no_printer}: the essay's PDF ({pdf.NAME}) is skipped")
        for r in records:
            (out / "figures" / r["id"] / "index.html").write_text(pages.render(
                env, "figure.html", fig=r, shown=changes.SHOWN_ROWS, figure_html=block("../../", None)(r["id"], r["number"]),
                specs=[r], root="../../", inline=None, citation=r["citation"],
                canonical=canonical(meta, f"figures/{r['id']}/"),
                og_image=og_image(meta, "../../", f"figures/{r['id']}/figure.png"),
                provenance={"code_hash": models.code_hash(), "families":
                            figure_export.provenance_families(figs[r["id"]], trained, grid),
                            "commit": build["commit"],
                            "module": citation.source(meta, build, repo_path(modules[r["id"]].__file__)),
                            "grid": citation.source(meta, build, repo_path(grid.path))},
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
        (out / "CITATION.cff").write_text(citation.cff(meta, build))
        (out / ".nojekyll").write_text("")
        (out / MARKER).write_text("made by superposition-explained's build.py; --out may replace "
                                  "this folder\n")
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


def check_out(out, content, cache):
    """The resolved --out folder, or a BuildError when the build could not prove it owns it:
    replacing the folder deletes what it held, so only a previous build's output (it carries
    MARKER), an empty folder or a new path qualify. Also refuses an unwritable parent now,
    before any training."""
    raw = str(out)
    if not raw.strip():
        raise BuildError("--out", "empty path (the current folder)", "pass a folder of its own, "
                         "e.g. --out build/site")
    target = Path(raw).expanduser().resolve()
    fix = "pass a new or empty folder, or a previous build's output (e.g. build/site)"
    if target == Path(target.anchor) or target == Path.home().resolve():
        raise BuildError(f"--out {raw}", "is the filesystem root or your home folder", fix)
    # Never the repository, its content, build/ or the cache, nor any folder holding them;
    # nor anything inside the content, the cache or .git.
    keep = [p.resolve() for p in (ROOT, ROOT / "build", content, cache)]
    if any(target == p or target in p.parents for p in keep):
        raise BuildError(f"--out {raw}", "holds the repository, its content or the model cache",
                         fix)
    if any(p in target.parents for p in (content.resolve(), cache.resolve(), ROOT / ".git")):
        raise BuildError(f"--out {raw}", "is inside the content, the model cache or .git", fix)
    if target.exists() and not target.is_dir():
        raise BuildError(f"--out {raw}", "is a file, not a folder", fix)
    if target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise BuildError(f"--out {raw}", f"is a non-empty folder the build did not make (no "
                         f"{MARKER} in it), so replacing it could delete your files", fix)
    if os.path.ismount(target):  # a mount point cannot be renamed, and the swap renames it
        raise BuildError(f"--out {raw}", "is a mount point, which the build cannot replace",
                         f"pass a folder inside it, e.g. --out {Path(raw) / 'site'}")
    # The new site is made beside the target, then swapped in: both must be writable.
    if writable_folder(f"--out {raw}", target, "pass another --out") == target:
        writable_folder(f"--out {raw}", target.parent, "pass another --out")
    return target


def check_cache(cache):
    """Refuse a model cache that cannot be written now, before any training: what is trained
    for a missing or bad entry is saved there."""
    writable_folder(f"--cache {cache}", Path(cache).expanduser().resolve(), "pass another --cache")


def writable_folder(flag, path, fix):
    """The first of `path` and its parents that exists, when it is a folder this user can write
    into; else a BuildError naming it."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise BuildError(flag, f"{existing} is a file, not a folder", fix)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise BuildError(flag, f"{existing} is not writable", f"make it writable or {fix}")
    return existing


def how_made(result, started):
    return "cache" if result.from_cache else f"trained in {time.perf_counter() - started:.0f} s"


def read_text(path):
    return read_utf8(path, ("content file missing", "restore it (git checkout -- content/)"))


def content_file(content, name):
    """content/NAME, refused where it is a link out of the content folder: the build publishes
    what it reads, and a link committed in a pull request could point at any file here."""
    path = content / name
    if path.is_symlink() and not path.resolve().is_relative_to(content.resolve()):
        raise BuildError(path, f"is a link to {path.resolve()}, outside {content}",
                         "put the file itself in the content folder")
    return path


def read_meta(path):
    """content/meta.toml, every key checked here, before training and by --check too: each a
    quoted string but allow_raw_html (true or false), the date a date, the repository's address
    one a link may carry."""
    text = read_text(path)
    try:
        meta = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise toml_error(path, text, e) from None
    for key in META_KEYS:
        if key not in meta:
            raise BuildError(path, f"missing '{key}'", f'add {key} = "..."')
    for key in meta:
        if key not in META_KEYS + OPTIONAL_META_KEYS + ("allow_raw_html",):
            raise BuildError(path, f"unknown key '{key}'", "use one of: " + ", ".join(
                META_KEYS + OPTIONAL_META_KEYS + ("allow_raw_html",)), key_line(path, key))
        if key != "allow_raw_html" and not isinstance(meta[key], str):
            raise BuildError(path, f"'{key}' must be a quoted string, got {meta[key]!r}",
                             f'write {key} = "..."', key_line(path, key))
    if not isinstance(meta.setdefault("allow_raw_html", False), bool):
        raise BuildError(path, f"'allow_raw_html' must be true or false, got "
                         f"{meta['allow_raw_html']!r}", "write allow_raw_html = true (unquoted) "
                         "or remove the line", key_line(path, "allow_raw_html"))
    try:  # fromisoformat alone would take 20240102 and 2024-W01
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", meta["date"]):
            raise ValueError
        datetime.date.fromisoformat(meta["date"])
    except ValueError:
        raise BuildError(path, f"'date' {meta['date']!r} is not a date",
                         'write date = "YYYY-MM-DD"', key_line(path, "date")) from None
    problem = unsafe_address(meta.get("repository_url", ""))
    if problem:
        raise BuildError(path, f"'repository_url' {problem}",
                         "give the repository's http(s) address, or leave it empty",
                         key_line(path, "repository_url"))
    return meta


def key_line(path, key):
    """The line that sets a top-level TOML key (not a comment that mentions it)."""
    lines = read_text(path).splitlines()
    return next((no for no, line in enumerate(lines, 1) if re.match(rf"{key}\s*=", line)), None)


def build_info(args, meta):
    """Version and date from the git commit (or flags; the date from meta.toml where git cannot
    tell, as in a source tarball), never the clock: same inputs, same bytes."""
    def git(*cmd):
        try:
            return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""
    version = args.version or git("rev-parse", "--short=12", "HEAD") or "unversioned"
    date = args.date or git("log", "-1", "--format=%cs") or meta["date"]
    try:
        datetime.date.fromisoformat(date)
    except ValueError:
        raise BuildError("--date", f"{date!r} is not a date", "use YYYY-MM-DD") from None
    return {"version": version, "date": date, "year": date[:4], "commit": git("rev-parse", "HEAD")}


def repo_path(path):
    """`path` relative to the repository, or None outside it (a --grid elsewhere)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if ROOT in path.parents else None


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
            "train": vars(grid.train), "cache_key": tr.key,
            "training_code": models.code_hash(tr.family.model)}


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
    path.write_text(figure_export.dumps(obj, path))


def site_size(out):
    files = [p for p in out.rglob("*") if p.is_file()]
    raw = sum(p.stat().st_size for p in files)
    # zlib's default level 6: within 1% of level 9's size here, at well under half its time; on
    # threads, since zlib lets go of the GIL (1.5 s of a cached rebuild on one)
    packed = lambda p: len(gzip.compress(p.read_bytes(), compresslevel=6, mtime=0))
    with ThreadPoolExecutor(models.cores()) as pool:
        return raw, sum(pool.map(packed, files))


@contextmanager
def staging(target):
    """Yield an empty folder beside `target`; on success swap it in, on any failure or signal
    remove it, leaving the previous site byte for byte as it was. A failure to write there (a
    full disk) is a BuildError naming the file."""
    target = target.resolve()
    tmp = target.with_name(f".{target.name}.staging-{os.getpid()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(target)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        yield tmp
        swap(tmp, target)
    except OSError as e:  # a write that failed has no file name when the disk filled up
        where = f" {e.filename}" if e.filename else ""
        raise BuildError(f"--out {target}", f"could not write the site{where} ({e.strerror}); "
                         "the previous site is untouched", "free space on its disk" if e.errno in (
                             errno.ENOSPC, errno.EDQUOT) else "pass another --out") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_leftovers(target):
    """Delete staging/old folders beside `target` left by a build that was killed (SIGKILL gives
    it no chance to clean up); those of a build still running are left alone."""
    for p in target.parent.glob(f".{target.name}.*-*"):
        kind, _, pid = p.name[len(target.name) + 2:].rpartition("-")
        if kind not in ("staging", "old") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            if int(pid) != os.getpid():
                continue  # another build is using it
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # a live process of another user
        shutil.rmtree(p, ignore_errors=True)


def honour_interrupts():
    """SIGINT and SIGTERM abort the build at any stage (training included) into the cleanup of
    staging(), even where SIGINT was inherited as ignored: a build started as a background job
    and brought back with `fg` should stop on Ctrl-C, as a user expects."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


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
    honour_interrupts()
    try:
        sys.exit(main())
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: nothing written; the previous site is untouched", file=sys.stderr)
        sys.exit(130)
