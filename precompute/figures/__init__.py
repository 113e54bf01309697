"""Figure data loaders: one module per figure, each turning trained models into tables, an
Altair chart, a caption and the facts the essay quotes. FIGURES lists them; ids are permanent."""
from dataclasses import dataclass, field

import altair as alt

alt.data_transformers.disable_max_rows()  # figure data is inline by design (file:// can't fetch)

# Okabe & Ito's colour-blind-safe palette; diverging and sequential schemes are Vega's
# colour-blind-safe "blueorange" and "viridis".
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]


@dataclass
class Figure:
    id: str
    title: str
    caption: str  # markdown; may quote facts
    description: str  # plain text for screen readers
    chart: object  # an Altair chart
    tables: dict  # name -> pandas.DataFrame, exported as JSON and CSV
    families: list  # grid families it draws on
    params: dict = field(default_factory=dict)  # what else fixes it (seeds, samples, ...)
    facts: dict = field(default_factory=dict)  # numbers the essay fills in


def note(what, table=None, rows=None, models=None):
    """A fact's description, for its preview in the essay: what the number is, and where a
    reader can check it: the rows (`rows`, as a reader would pick them out) of the figure's
    table `table` (published as figures/<id>/<table>.csv), and the grid tables of the models it
    comes from where that is fewer than the figure's own (`models`, a list). A module's
    FACT_NOTES maps each fact name to these arguments: a string (`what`) or a tuple."""
    return {"what": what, "table": table, "rows": rows, "models": models}


def sparsity_label(s):
    return f"{s:.3g}"


# Slider labels by (param name, binding title, length): the page shows "S = 0.9" beside the
# slider, not the grid index it sets (see slider_labels and the spec's usermeta).
_SLIDER_LABELS = {}


def index_slider(name, labels, title):
    """A slider over grid-point indices; the chart and the slider show the value it stands for."""
    fmt = "S = {}" if "sparsity" in title else "{}"
    text = [fmt.format(sparsity_label(v) if isinstance(v, float) else v) for v in labels]
    key = (name, title, len(labels))
    if _SLIDER_LABELS.setdefault(key, text) != text:
        raise ValueError(f"two sliders {key} with different values: give them different names")
    return alt.param(name=name, value=len(labels) // 2,
                     bind=alt.binding_range(min=0, max=len(labels) - 1, step=1, name=title))


def slider_labels(spec):
    """{param name: [label per index]} for the index sliders anywhere in a Vega-Lite spec."""
    found = {}

    def walk(node):
        if isinstance(node, dict):
            bind = node.get("bind")
            if isinstance(bind, dict) and bind.get("input") == "range" and "name" in node:
                key = (node["name"], bind.get("name"), int(bind.get("max", -1)) + 1)
                if key in _SLIDER_LABELS and bind.get("min") == 0:
                    found[node["name"]] = _SLIDER_LABELS[key]
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(spec)
    return found


def arrows_from_origin(base, color, label, scale, width=2.5, titles=(None, None)):
    """Directions as arrows from the origin of a plane, each labelled at its tip."""
    return alt.layer(
        base.mark_rule(strokeWidth=width).encode(
            x=alt.X("x:Q", scale=scale, title=titles[0]), y=alt.Y("y:Q", scale=scale, title=titles[1]),
            x2=alt.datum(0), y2=alt.datum(0), color=color),
        base.mark_text(dx=9, dy=-9, fontSize=12, fontWeight="bold").encode(
            x="x:Q", y="y:Q", text=label, color=color))


def _modules():
    from precompute.figures import (concentration, dimensionality, lab_correlations,
                                    lab_interference, lab_packing, phase_diagram, sae_recovery,
                                    superposition_panel)
    from precompute.figures import adversarial, learning_dynamics
    from precompute.figures import computation, correlated_features
    return [lab_correlations, lab_interference, lab_packing, superposition_panel, phase_diagram,
            dimensionality, concentration, sae_recovery,
            adversarial, learning_dynamics,
            correlated_features, computation]


def build_all(trained):
    """Every figure, from everything trained, keyed by grid table: "NAME" for [family.NAME]
    (models.Trained), "sae.NAME" for [sae.NAME] (sae.TrainedSAEs)."""
    return [m.build(trained) for m in _modules()]


def ids():
    return [m.ID for m in _modules()]


def facts():
    """Figure id -> the fact names its build() returns, known without training (for --check)."""
    return {m.ID: m.FACTS for m in _modules()}


def fact_notes():
    """Figure id -> {fact name: note(...)}: each module's FACT_NOTES, beside its FACTS. A fact
    without a note still renders, its preview naming only its figure."""
    return {m.ID: {name: note(*v) if isinstance(v, tuple) else note(v)
                   for name, v in getattr(m, "FACT_NOTES", {}).items()} for m in _modules()}


def required_families():
    """grid table ("NAME" or "sae.NAME") -> the first figure id that needs it."""
    need = {}
    for m in _modules():
        for fam in m.FAMILIES:
            need.setdefault(fam, m.ID)
    return need
