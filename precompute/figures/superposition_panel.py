"""The paper's key panel for n=20, m=5: W^T W and the feature norms ||W_i||, coloured by how much
each feature shares its dimensions with others, across sparsity."""
import altair as alt
import pandas as pd

from precompute import metrics
from precompute.figures import Figure, index_slider, sparsity_label
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss

ID = "superposition-panel"
FAMILY = "superposition"
LINEAR = "linear"
FAMILIES = [FAMILY, LINEAR]
# the names build() puts in facts, for --check
FACTS = ('onset_sparsity', 'onset_before', 'linear_represented', 'relu_dense_represented',
         'relu_sparse_represented', 'sparse_seed_represented', 'sparsest', 'seeds', 'eval_samples')


def build(trained):
    tr = trained[FAMILY]
    fam = tr.family
    gram, bars = [], []
    for idx, k in enumerate(lowest_loss(tr)):
        inst = fam.instances[k]
        W, _, _ = tr.model(k)
        geo = metrics.geometry(W)
        G = W.T @ W
        label = sparsity_label(inst.sparsity)
        for i in range(inst.n):
            bars.append({"s_index": idx, "sparsity": label, "feature": i + 1,
                         "norm": round(float(geo["norm"][i]), 4),
                         "superposition": round(float(geo["superposition"][i]), 4)})
            for j in range(inst.n):
                gram.append({"s_index": idx, "i": i + 1, "j": j + 1, "value": round(float(G[i, j]), 4)})
    gram, bars = pd.DataFrame(gram), pd.DataFrame(bars)

    lin = trained[LINEAR]
    lin_rep = sorted({int((metrics.geometry(lin.model(k)[0])["norm"] > REPRESENTED).sum())
                      for k in lowest_loss(lin)})
    relu_rep = bars[bars.norm > REPRESENTED].groupby("s_index").size().reindex(
        range(len(bars.s_index.unique())), fill_value=0)
    # Where superposition begins: the first sparsity whose best model represents more features
    # than it has dimensions (a count that does not depend on the hidden basis).
    labels = list(dict.fromkeys(bars.sparsity))
    over = [i for i, c in enumerate(relu_rep) if c > fam.m]
    # every seed's count at the sparsest point, where the seeds disagree most
    sparsest = [int((metrics.geometry(tr.model(k)[0])["norm"] > REPRESENTED).sum())
                for k, i in enumerate(fam.instances) if i.sparsity == fam.instances[-1].sparsity]
    facts = {"onset_sparsity": labels[over[0]] if over else "never",
             "onset_before": labels[over[0] - 1] if over and over[0] > 0 else "none",
             "linear_represented": " or ".join(map(str, lin_rep)),
             "relu_dense_represented": int(relu_rep.iloc[0]),
             "relu_sparse_represented": int(relu_rep.iloc[-1]),
             "sparse_seed_represented": f"{min(sparsest)} to {max(sparsest)}",
             "sparsest": bars.sparsity.iloc[-1], "seeds": fam.seeds,
             "eval_samples": f"{int(tr.arrays['eval_samples'].item()):,}"}

    s = index_slider("s_index", list(bars.sparsity.unique()), "sparsity step")
    heat = alt.Chart(gram).transform_filter(alt.datum.s_index == s).mark_rect().encode(
        x=alt.X("j:O", title="feature j"), y=alt.Y("i:O", title="feature i"),
        color=alt.Color("value:Q", title="(WᵀW)ᵢⱼ", scale=alt.Scale(scheme="blueorange",
                                                                    domain=[-1, 1])),
        tooltip=["i:O", "j:O", "value:Q"]).properties(width=260, height=260, title="WᵀW")
    bar = alt.Chart(bars).transform_filter(alt.datum.s_index == s).mark_bar().encode(
        y=alt.Y("feature:O", title="feature i"),
        x=alt.X("norm:Q", title="‖Wᵢ‖", scale=alt.Scale(domain=[0, 1.3])),
        color=alt.Color("superposition:Q", title="Σⱼ≠ᵢ (Ŵᵢ·Wⱼ)²",
                        scale=alt.Scale(scheme="viridis", domain=[0, 1])),
        tooltip=["feature:O", "norm:Q", "superposition:Q", "sparsity:N"],
    ).properties(width=200, height=260, title="feature norms")
    label = alt.Chart(bars).transform_filter((alt.datum.s_index == s) & (alt.datum.feature == 1)) \
        .transform_calculate(t="'S = ' + datum.sparsity").mark_text(
        align="right", x=200, y=-20, fontSize=13).encode(text="t:N")
    chart = alt.hconcat(heat, alt.layer(bar, label)).add_params(s).resolve_scale(color="independent")

    caption = (f"Left: the matrix WᵀW of the lowest-loss n = 20, m = 5 model at the chosen "
               f"sparsity (feature importance 0.7^i). Right: each feature's norm ‖Wᵢ‖, coloured by "
               f"how much it overlaps with other features. Dense inputs: "
               f"{facts['relu_dense_represented']} features, each with its own orthogonal "
               f"direction (dark bars). At S = {facts['sparsest']}: "
               f"{facts['relu_sparse_represented']} features, most sharing dimensions (bright "
               f"bars). The linear model, for comparison, represents "
               f"{facts['linear_represented']} features at every sparsity we trained.")
    description = ("Heatmap of W transpose W beside a bar chart of feature norms coloured by "
                   "superposition, with a sparsity slider.")
    return Figure(ID, "Superposition in WᵀW and the feature norms", caption, description, chart,
                  {"gram": gram, "norms": bars}, FAMILIES,
                  {"selection": "lowest final loss of the seeds at each sparsity"}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "onset_sparsity": ("first sparsity S at which the lowest-loss ReLU model (n = 20, m = 5) "
                       "represents (‖W_i‖ > 0.5) more features than its five dimensions", "norms",
                       "rows with norm > 0.5, counted per sparsity", ["superposition"]),
    "onset_before": ("the sparsity step just before superposition begins", "norms",
                     "rows with norm > 0.5, counted per sparsity", ["superposition"]),
    "linear_represented": ("features the lowest-loss linear model represents (‖W_i‖ > 0.5), at "
                           "every sparsity trained", None, None, ["linear"]),
    "relu_dense_represented": ("features the lowest-loss ReLU model represents at the densest "
                               "sparsity", "norms", "rows with s_index = 0 and norm > 0.5",
                               ["superposition"]),
    "relu_sparse_represented": ("features the lowest-loss ReLU model represents at the sparsest "
                                "sparsity", "norms", "rows of the last s_index with norm > 0.5",
                                ["superposition"]),
    "sparse_seed_represented": ("fewest to most features represented by any seed at the "
                                "sparsest sparsity", None, None, ["superposition"]),
    "sparsest": ("the sparsest S of the sweep", "norms", "column sparsity, last value",
                 ["superposition"]),
    "seeds": "seeds trained at each sparsity; the lowest-loss one is drawn",
    "eval_samples": ("fresh inputs every seed's loss is scored on, to pick the lowest-loss seed "
                     "([train] eval_samples in the grid config)", None, None, ["superposition"]),
}
