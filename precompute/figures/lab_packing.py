"""Lab 3.3: the trained columns W_i of m=2 models drawn as arrows in the plane, for every number
of features n and sparsity in the grid, with which features are represented and the loss."""
import altair as alt
import numpy as np
import pandas as pd

from precompute import metrics
from precompute.figures import PALETTE, Figure, arrows_from_origin, index_slider, sparsity_label
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss

ID = "lab-packing"
FAMILY = "packing2d"
FAMILIES = [FAMILY]
# the names build() puts in facts, for --check
FACTS = ('pentagon_sparsity', 'dense_represented_n5', 'dense_norm_sq_n5', 'square_sparsities',
         'seeds')


def is_square(W, live):
    """Four live columns in two antipodal pairs at right angles: a square."""
    U = W[:, live] / metrics.geometry(W)["norm"][live]
    off = (U.T @ U)[~np.eye(int(live.sum()), dtype=bool)]
    return int(live.sum()) == 4 and bool(np.all((np.abs(off) < 0.1) | (off < -0.99)))


def build(trained):
    tr = trained[FAMILY]
    fam = tr.family
    arrows, cells, squares = [], [], []
    sparsities = sorted({i.sparsity for i in fam.instances})
    ns = sorted({i.n for i in fam.instances})
    for k in lowest_loss(tr):
        inst = fam.instances[k]
        W, _, _ = tr.model(k)
        geo = metrics.geometry(W)
        s_index, rep = sparsities.index(inst.sparsity), int((geo["norm"] > REPRESENTED).sum())
        loss = float(tr.arrays["final_loss"][k])
        if inst.n == 5 and is_square(W, geo["norm"] > REPRESENTED):
            squares.append(sparsity_label(inst.sparsity))
        for i in range(inst.n):
            arrows.append({"n": inst.n, "s_index": s_index, "feature": i + 1,
                           "x": round(float(W[0, i]), 4), "y": round(float(W[1, i]), 4),
                           "norm": round(float(geo["norm"][i]), 4),
                           "represented": "represented" if geo["norm"][i] > REPRESENTED
                           else "not represented"})
        cells.append({"n": inst.n, "s_index": s_index, "sparsity": sparsity_label(inst.sparsity),
                      "represented": rep, "final_loss": loss, "seed": inst.seed,
                      "label": f"n = {inst.n}, S = {sparsity_label(inst.sparsity)}: {rep} of "
                               f"{inst.n} represented, loss {loss:.2e}"})
    arrows, cells = pd.DataFrame(arrows), pd.DataFrame(cells)
    pent = cells[(cells.n == 5)].sort_values("s_index")
    facts = {"pentagon_sparsity": next((r.sparsity for r in pent.itertuples()
                                        if r.represented == 5), "never"),
             "dense_represented_n5": int(pent.iloc[0].represented),
             # ||W||_F^2 of the dense n=5 model: how many dimensions' worth of norm it spreads
             "dense_norm_sq_n5": round(float((arrows[(arrows.n == 5) & (arrows.s_index == 0)]
                                              .norm ** 2).sum()), 2),
             "square_sparsities": ", ".join(squares) or "none",
             "seeds": fam.seeds}

    n_sel = alt.param(name="n_features", value=5,
                      bind=alt.binding_range(min=min(ns), max=max(ns), step=1, name="features n"))
    s_sel = index_slider("s_index", [sparsity_label(s) for s in sparsities], "sparsity step")
    pick = (alt.datum.n == n_sel) & (alt.datum.s_index == s_sel)
    plane = alt.Chart(arrows).transform_filter(pick)
    scale = alt.Scale(domain=[-1.4, 1.4])
    color = alt.Color("represented:N", scale=alt.Scale(domain=["represented", "not represented"],
                                                       range=[PALETTE[0], PALETTE[1]]),
                      legend=alt.Legend(orient="bottom", title=None))
    tips = plane.mark_point(filled=True, size=60).encode(
        x="x:Q", y="y:Q", color=color, tooltip=["feature:O", "x:Q", "y:Q", "norm:Q"])
    label = alt.Chart(cells).transform_filter(pick).mark_text(
        align="left", x=0, y=-12, fontSize=12).encode(text="label:N")
    arrows_chart = alt.layer(
        arrows_from_origin(plane, color, "feature:O", scale,
                           titles=("hidden dimension 1", "hidden dimension 2")),
        tips, label).properties(width=290, height=290)

    grid = alt.Chart(cells).mark_rect().encode(
        x=alt.X("sparsity:O", sort=[sparsity_label(s) for s in sparsities], title="sparsity S"),
        y=alt.Y("n:O", title="features n"),
        color=alt.Color("represented:Q", title="represented", scale=alt.Scale(scheme="viridis")),
        tooltip=["n:O", "sparsity:N", "represented:Q", "final_loss:Q"])
    here = alt.Chart(cells).transform_filter(pick).mark_rect(
        fill=None, stroke="#D55E00", strokeWidth=3).encode(
        x=alt.X("sparsity:O", sort=[sparsity_label(s) for s in sparsities]), y="n:O")
    grid_chart = alt.layer(grid, here).properties(width=240, height=240)
    chart = alt.hconcat(arrows_chart, grid_chart).add_params(n_sel, s_sel)

    caption = (f"Each arrow is one column W_i of a trained model with m = 2 hidden dimensions; "
               f"choose the number of features n and the sparsity with the sliders (the "
               f"lowest-loss of {fam.seeds} seeds is shown). Dense inputs give the model two "
               f"dimensions' worth of weight (squared norm {facts['dense_norm_sq_n5']} at n = 5) "
               f"to share among equally important features; sparse ones let it store more "
               f"features in full by spacing them around the circle. "
               f"With n = 5 all five features are represented from S = "
               f"{facts['pentagon_sparsity']}, as a regular pentagon. The second panel, a grid, "
               f"counts represented features for every (n, S) pair.")
    description = ("Arrows in the plane for each feature of a two-dimensional toy model, with "
                   "sliders for the number of features and the sparsity, and a grid of how "
                   "many features are represented for every setting.")
    return Figure(ID, "Lab 3.3 — Packing features into two dimensions", caption, description,
                  chart, {"arrows": arrows, "models": cells}, FAMILIES,
                  {"selection": "lowest final loss of the seeds at each (n, S)"}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "pentagon_sparsity": ("least sparsity at which the lowest-loss n = 5 model in two "
                          "dimensions represents all five features (a pentagon)", "models",
                          "rows with n = 5 and represented = 5, the first"),
    "dense_represented_n5": ("features of five the densest lowest-loss n = 5 model represents "
                             "(‖W_i‖ > 0.5)", "models", "the row n = 5, s_index = 0"),
    "dense_norm_sq_n5": ("total squared column norm Σ‖W_i‖² of the densest n = 5 model: how "
                         "many dimensions' worth it spreads", "arrows",
                         "rows with n = 5, s_index = 0: the sum of norm²"),
    "square_sparsities": ("sparsities at which the lowest-loss n = 5 model is a square: four "
                          "features in two antipodal pairs at right angles"),
    "seeds": "seeds trained at each (n, S); the lowest-loss one is drawn",
}
