"""Lab 3.1: neuron-feature Pearson correlations of the n=20, m=5 models as sparsity grows, and how
many features each neuron mixes (participation ratio) beside how many the model represents."""
import altair as alt
import pandas as pd

from precompute import metrics
from precompute.figures import PALETTE, Figure, index_slider, sparsity_label
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss

ID = "lab-correlations"
FAMILY = "superposition"
FAMILIES = [FAMILY]
# the names build() puts in facts, for --check
FACTS = ('onset_sparsity', 'onset_before', 'dense_features_per_neuron',
         'sparse_features_per_neuron', 'sparsest', 'sparse_represented')


def build(trained):
    tr = trained[FAMILY]
    fam = tr.family
    best = lowest_loss(tr)
    heat, summary = [], []
    for idx, k in enumerate(best):
        inst = fam.instances[k]
        W, _, corr = tr.model(k)
        geo = metrics.geometry(W)
        pr = metrics.participation_ratio(corr)
        label = sparsity_label(inst.sparsity)
        for j in range(fam.m):
            for i in range(inst.n):
                heat.append({"s_index": idx, "sparsity": label, "neuron": j + 1, "feature": i + 1,
                             "r": round(float(corr[j, i]), 4)})
        summary.append({"s_index": idx, "sparsity": label, "S": inst.sparsity,
                        "features_per_neuron": round(float(pr.mean()), 4),
                        "represented_per_neuron": int((geo["norm"] > REPRESENTED).sum()) / fam.m,
                        "seed": inst.seed, "final_loss": float(tr.arrays["final_loss"][k])})
    heat, summary = pd.DataFrame(heat), pd.DataFrame(summary)

    # Where superposition begins: the first sparsity whose best model represents more features
    # than it has neurons. (Participation ratio is basis-dependent; this count is not.)
    over = summary[summary.represented_per_neuron > 1]
    onset = over.iloc[0] if len(over) else None
    before = summary.iloc[int(onset.s_index) - 1] if onset is not None and onset.s_index > 0 else None
    dense, sparse = summary.iloc[0], summary.iloc[-1]
    facts = {
        "onset_sparsity": onset.sparsity if onset is not None else "never",
        "onset_before": before.sparsity if before is not None else "0",
        "dense_features_per_neuron": f"{dense.features_per_neuron:.1f}",
        "sparse_features_per_neuron": f"{sparse.features_per_neuron:.1f}",
        "sparsest": sparse.sparsity,
        "sparse_represented": int(round(sparse.represented_per_neuron * fam.m)),
    }

    s = index_slider("s_index", list(summary.sparsity), "sparsity step")
    base = alt.Chart(heat).transform_filter(alt.datum.s_index == s)
    heatmap = base.mark_rect().encode(
        x=alt.X("feature:O", title="feature i (importance 0.7^i, most important first)"),
        y=alt.Y("neuron:O", title="neuron"),
        color=alt.Color("r:Q", title="Pearson r", scale=alt.Scale(scheme="blueorange",
                                                                  domain=[-1, 1])),
        tooltip=["neuron:O", "feature:O", "r:Q", "sparsity:N"],
    ).properties(width=380, height=130)
    label = base.transform_filter(alt.datum.neuron == 1).transform_filter(
        alt.datum.feature == 1).mark_text(align="left", dx=-190, dy=-80, fontSize=13).encode(
        text=alt.Text("label:N")).transform_calculate(
        label="'sparsity S = ' + datum.sparsity")
    long = summary.melt(id_vars=["s_index", "sparsity"],
                        value_vars=["features_per_neuron", "represented_per_neuron"],
                        var_name="measure", value_name="value")
    long["measure"] = long.measure.map({
        "features_per_neuron": "features each neuron mixes (participation ratio)",
        "represented_per_neuron": "features represented per neuron (||W_i|| > 0.5, / m)"})
    x = alt.X("sparsity:O", title="sparsity S", scale=alt.Scale(domain=list(summary.sparsity)))
    lines = alt.Chart(long).mark_line(point=True).encode(
        x=x, y=alt.Y("value:Q", title="features per neuron"),
        color=alt.Color("measure:N", scale=alt.Scale(range=PALETTE[:2]),
                        legend=alt.Legend(orient="bottom", direction="vertical", title=None,
                                          labelLimit=0)),
        tooltip=["sparsity:N", "measure:N", "value:Q"])
    cursor = alt.Chart(summary).transform_filter(alt.datum.s_index == s).mark_rule(
        color="gray", strokeDash=[4, 3]).encode(x=x)
    marks = [lines, cursor]
    if onset is not None:
        marks.append(alt.Chart(pd.DataFrame([{"sparsity": onset.sparsity,
                                              "text": f"superposition from S = {onset.sparsity}"}]))
                     .mark_text(align="left", dx=4, dy=-60, fontSize=11)
                     .encode(x=x, text="text:N"))
        marks.append(alt.Chart(pd.DataFrame([{"sparsity": onset.sparsity}])).mark_rule(
            color=PALETTE[5]).encode(x=x))
    trend = alt.layer(*marks).properties(width=380, height=200)
    chart = alt.vconcat(alt.layer(heatmap, label), trend).add_params(s)

    caption = (f"Pearson correlation between each of the m = 5 hidden neurons and each of the "
               f"n = 20 input features, measured on fresh inputs for the lowest-loss of "
               f"{fam.seeds} trained models at every sparsity. Drag the slider to move through "
               f"sparsity. Below: each neuron mixes about {facts['dense_features_per_neuron']} "
               f"features even when inputs are dense, rising to about "
               f"{facts['sparse_features_per_neuron']} at S = {facts['sparsest']}; the model "
               f"first represents more features than it has neurons at S = "
               f"{facts['onset_sparsity']}.")
    description = (f"Heatmap of correlations between 5 neurons and 20 features with a sparsity "
                   f"slider, above a line chart of features per neuron against sparsity. "
                   f"Superposition begins at sparsity {facts['onset_sparsity']}.")
    return Figure(ID, "Lab 3.1 — Neuron-feature correlations as sparsity grows", caption,
                  description, chart, {"correlations": heat, "summary": summary}, FAMILIES,
                  {"selection": "lowest final loss of the seeds at each sparsity"}, facts)
