"""Each figure's public files under figures/<id>/: spec.vl.json, data.json, <table>.csv,
figure.svg, figure.png, the same files again under figures/<id>/v/<first 12 hex of the spec's
sha256>/ (an address that never changes its bytes), and its manifest entry. Ids and paths here are
a published layout."""
import hashlib
import json
import re
import shutil
import statistics

from pathlib import Path

import markdown
import numpy as np
import vl_convert

from errors import BuildError
from precompute import cache
from precompute.figures import slider_labels
from render import citation

GENERATOR = "superposition-explained"


def version_path(fig_id, sha):
    return f"figures/{fig_id}/v/{sha[:12]}/"


def canonical_spec(fig):
    """The standalone Vega-Lite spec, with view names made independent of build order: Altair
    numbers unnamed views with a process-wide counter, which would let one figure's edit change
    another figure's bytes."""
    spec = fig.chart.to_dict()
    spec["title"] = fig.title
    spec["description"] = fig.description
    labels = slider_labels(spec)
    if labels:  # what each index slider's positions mean, for the page to show beside it
        spec["usermeta"] = {**spec.get("usermeta", {}), "sliderLabels": labels}
    text = json.dumps(spec, sort_keys=True, ensure_ascii=False)
    names = list(dict.fromkeys(re.findall(r"\"(view_\d+)\"", text)))
    for i, name in enumerate(names):
        text = text.replace(f'"{name}"', f'"v{i + 1}"')
    return json.loads(text)


def spec_json(spec):
    return dumps(spec, "spec.vl.json")


def dumps(obj, path, **kw):
    """Compact, sorted JSON; NaN and infinity are refused, since bare NaN is not JSON and would
    publish a file no browser can parse."""
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, **kw)
    except ValueError:
        raise BuildError(path, "a value to publish is NaN or infinite (a model diverged?)",
                         "lower the learning rate of the grid point that produced it") from None


def script_safe(text):
    """JSON placed inside <script> must not contain '</'."""
    return text.replace("</", "<\\/")


def provenance_families(fig, trained, grid):
    """What each grid table behind a figure was, for its permalink page."""
    out = []
    for name in fig.families:
        tr = trained[name]
        if name.startswith("sae."):
            cfg, fvu = grid.sae_train, [r["fvu"] for r in tr.rows]
            out.append({"name": name, "title": f"sparse autoencoders on {tr.sweep.family}",
                        "models": len(tr), "spec": json.dumps(tr.sweep.spec, sort_keys=True),
                        "recipe": f"{cfg.steps} steps each, batch {cfg.batch_size}, Adam lr "
                                  f"{cfg.learning_rate}, one seed",
                        "result": f"unexplained variance {min(fvu):.3g} to {max(fvu):.3g}",
                        "key": tr.key})
            continue
        losses, cfg = [float(x) for x in tr.arrays["final_loss"]], grid.train
        out.append({"name": name, "title": tr.family.title, "models": len(tr),
                    "spec": json.dumps(tr.family.spec, sort_keys=True),
                    "recipe": f"{tr.family.seeds} seeds, {tr.steps} steps each, batch "
                              f"{cfg.batch_size}, AdamW lr {cfg.learning_rate}",
                    "result": f"final loss {min(losses):.3g} to {max(losses):.3g} (median "
                              f"{statistics.median(losses):.3g})", "key": tr.key})
    return out


def static_images(fig_id, spec, sha, cache_dir):
    """The spec's SVG and PNG (2x). Drawing them took about 3 s of every build on this machine,
    so they are cached beside the models, keyed on the spec's sha256 and the vl-convert version,
    and checked like a model entry."""
    key = hashlib.sha256(json.dumps({"spec": sha, "vl_convert": vl_convert.__version__,
                                     "png_scale": 2}).encode()).hexdigest()
    path = Path(cache_dir) / f"static-{fig_id}-{key[:16]}.npz"
    arrays = cache.made(path, key, lambda: {
        "svg": np.array(vl_convert.vegalite_to_svg(spec)),
        "png": np.frombuffer(vl_convert.vegalite_to_png(spec, scale=2), np.uint8)})
    return str(arrays["svg"]), arrays["png"].tobytes()


def export(fig, number, out_dir, meta, build, cache_dir):
    """Write the figure's files; return its record (manifest fields plus page fields)."""
    folder = out_dir / "figures" / fig.id
    folder.mkdir(parents=True, exist_ok=True)
    spec = canonical_spec(fig)
    text = spec_json(spec)
    sha = hashlib.sha256(text.encode()).hexdigest()
    (folder / "spec.vl.json").write_text(text)
    tables = {name: json.loads(df.to_json(orient="records", double_precision=10))
              for name, df in fig.tables.items()}
    (folder / "data.json").write_text(dumps(tables, folder / "data.json"))
    data = ["data.json"]
    for name, df in fig.tables.items():
        df.to_csv(folder / f"{name}.csv", index=False, lineterminator="\n")
        data.append(f"{name}.csv")
    # The chart's spec as a script that registers it: the essay loads it when the chart nears
    # the screen, which works from file:// too, where fetching a JSON file does not.
    (folder / "spec.js").write_text(f"(window.figureSpecs = window.figureSpecs || {{}})"
                                    f"[{json.dumps(fig.id)}] = {script_safe(text)};\n")
    svg, png = static_images(fig.id, spec, sha, cache_dir)
    (folder / "figure.svg").write_text(svg)
    (folder / "figure.png").write_bytes(png)
    vpath = version_path(fig.id, sha)
    versioned = out_dir / vpath
    versioned.mkdir(parents=True)
    for name in ["spec.vl.json", "figure.svg", "figure.png", *data]:
        shutil.copyfile(folder / name, versioned / name)
    return {
        "id": fig.id, "number": number, "title": fig.title, "description": fig.description,
        "caption_html": markdown.markdown(fig.caption)[3:-4],  # one paragraph, without <p>
        "spec": f"figures/{fig.id}/spec.vl.json", "version_path": vpath,
        "data": data, "sha256": sha, "json": script_safe(text),
        "svg": svg, "svg_size": svg_size(svg),
        "params": {"families": fig.families, **fig.params},
        "versions": [{"sha256": sha, "path": vpath, "date": build["date"],
                      "version": build["version"]}],
        "citation": citation.figure(meta, build, fig.id, fig.title, sha, vpath),
    }


def svg_size(svg):
    """The static image's width and height, so the page keeps its place before it loads."""
    head = re.search(r"<svg[^>]*>", svg).group(0)
    return [round(float(re.search(rf'\b{k}="([\d.]+)', head).group(1))) for k in ("width", "height")]


def manifest(records):
    """`versions` lists every published version of the figure, oldest first; `generator` marks
    a site this build made, whose versions the next build carries forward."""
    return json.dumps({"generator": GENERATOR, "figures": [
        {"id": r["id"], "number": r["number"], "title": r["title"], "spec": r["spec"],
         "data": [f"figures/{r['id']}/{d}" for d in r["data"]], "sha256": r["sha256"],
         "permalink": r["version_path"], "params": r["params"], "versions": r["versions"]}
        for r in records]}, indent=1, sort_keys=True)
