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


# A filter clause testing a field against a control, as Altair writes it: datum.COL === PARAM.
CLAUSE = re.compile(r"datum(?:\.(\w+)|\['([^']+)'\]) === (\w+)")


def _views(node, data=None, clauses=frozenset()):
    """(dataset name, filter clauses) of every view that draws marks. A view with data of its
    own starts afresh; otherwise it inherits its parent's data and filters."""
    if isinstance(node.get("data"), dict) and "name" in node["data"]:
        data, clauses = node["data"]["name"], frozenset()
    for t in node.get("transform", []):
        f = t.get("filter")
        # only plain conjunctions: under || or a negation a clause does not pick the rows
        if isinstance(f, str) and "||" not in f and not re.search(r"!(?!=)", f):
            clauses |= {(a or b, p) for a, b, p in CLAUSE.findall(f)}
    if "mark" in node:
        yield data, clauses
    for key in ("layer", "hconcat", "vconcat", "concat"):
        for child in node.get(key, []):
            yield from _views(child, data, clauses)


def _same_rows(table, dataset):
    """Whether the chart's dataset holds the table's rows in order (floats as published: 10 digits)."""
    close = lambda a, b: a == b or (isinstance(a, float) and isinstance(b, float) and
                                    abs(a - b) <= 1e-9 * max(1.0, abs(b)))
    return len(table) == len(dataset) and all(
        close(t[k], d.get(k)) for t, d in zip(table, dataset) for k in t)


def view_tables(spec, tables):
    """The figure's data table for the page (site.js): its bound controls with their defaults, and
    each published table with the controls that pick its rows in the current view. A table's data
    in the chart are the spec's datasets that share most of its columns and have as many rows or
    a multiple (a table melted for the chart); the table follows a control when every view that
    draws those data filters them with datum.COL === control. COL is the table's own column, or
    one the chart's copy of the same rows adds (then the row keys are given)."""
    bound = {p["name"]: p for p in spec.get("params", []) if "bind" in p}
    labels = spec.get("usermeta", {}).get("sliderLabels", {})
    drawn = {}
    for name, clauses in _views(spec):
        drawn.setdefault(name, []).append({c for c in clauses if c[1] in bound})
    datasets = {k: v for k, v in spec.get("datasets", {}).items() if k in drawn and v}
    cols = {t: set(rows[0]) if rows else set() for t, rows in tables.items()}
    owner = {}
    for name, rows in datasets.items():
        fits = [t for t in tables if tables[t] and len(rows) % len(tables[t]) == 0
                and cols[t] & set(rows[0])]
        if fits:
            owner[name] = max(fits, key=lambda t: (len(cols[t] & set(rows[0])),
                                                   -abs(len(rows) - len(tables[t]))))
    out = []
    for t, rows in tables.items():
        mine = [d for d in datasets if owner.get(d) == t]
        common = set.intersection(*[c for d in mine for c in drawn[d]]) if mine else set()
        filters = []
        for col, param in sorted(common, key=lambda c: list(bound).index(c[1])):
            if col in cols[t]:
                filters.append({"param": param, "column": col})
                continue
            same = [d for d in mine if _same_rows(rows, datasets[d])]
            if same:
                filters.append({"param": param, "keys": [r[col] for r in datasets[same[0]]]})
        columns = list(rows[0]) if rows else []
        out.append({"name": t, "columns": columns, "filters": filters,
                    "rows": [[r[c] for c in columns] for r in rows]})
    return {"params": {n: {"value": p.get("value"), "bind": p["bind"],
                           **({"labels": labels[n]} if n in labels else {})}
                       for n, p in bound.items()}, "tables": out}


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
    # What the data table under the chart shows, loaded like the spec when a reader opens it.
    view = script_safe(dumps(view_tables(spec, tables), folder / "table.js"))
    (folder / "table.js").write_text(f"(window.figureTables = window.figureTables || {{}})"
                                     f"[{json.dumps(fig.id)}] = {view};\n")
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
        "data": data, "sha256": sha, "json": script_safe(text), "table_json": view,
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
