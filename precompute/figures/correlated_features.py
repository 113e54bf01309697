"""Correlated and anticorrelated features (Elhage et al. 2022, "Correlated and Anticorrelated
Features"): the trained columns W_i of m = 2 models as arrows, for two correlated pairs, two
anticorrelated pairs and three correlated pairs across density (which collapse onto their
principal component as inputs get denser), and W^T W of an n = 20, m = 10 model with two
correlated sets of ten (local orthogonal bases). Seeds: the lowest loss at each grid point."""
import altair as alt
import numpy as np
import pandas as pd

from precompute.figures import PALETTE, Figure, arrows_from_origin, index_slider
from precompute.models import lowest_loss

ID = "correlated-features"
FAMILIES = ["correlated", "anticorrelated", "local_bases"]
# the names build() puts in facts, for --check
FACTS = ("density", "correlated_within_cos", "anticorrelated_within_cos", "collapsed_sparsest",
         "collapsed_densest", "sparsest", "densest", "hexagon_densities", "pca_norm",
         "basis_density", "basis_within", "basis_between", "seeds", "disagree_densities",
         "disagree_ours", "disagree_paper")
FOCUS_DENSITY = 0.05  # the two-pair panels: sparse enough for superposition, as the paper's
SPARSE = 0.25  # 1 - S at or below which correlated pairs sit orthogonal (tested)
COLLAPSED = 0.95  # cosine above which a correlated pair shares one direction


def paper_collapsed(density):
    """The paper's count of collapsed pairs (three correlated pairs in m = 2) by density 1 - S:
    none up to about 0.05, one to about 0.15, two to about 0.2, all three from about 0.25."""
    return 0 if density <= 0.05 else 1 if density <= 0.15 else 2 if density <= 0.2 else 3


def best(tr):
    """{(n, density): model index} of the lowest-loss seed at each grid point."""
    fam = tr.family
    return {(fam.instances[k].n, round(1 - fam.instances[k].sparsity, 6)): k
            for k in lowest_loss(tr)}


def cosines(W):
    U = W / np.maximum(np.linalg.norm(W, axis=0), 1e-12)
    return U.T @ U


def set_cosines(W, k):
    """Cosines between features of the same set and of different sets (consecutive sets of k)."""
    C, n = cosines(W), W.shape[1]
    same = [C[i, j] for i in range(n) for j in range(i + 1, n) if i // k == j // k]
    other = [C[i, j] for i in range(n) for j in range(i + 1, n) if i // k != j // k]
    return np.array(same), np.array(other)


def collapsed_sets(W, k=2):
    """How many correlated pairs point the same way (their principal component)."""
    same, _ = set_cosines(W, k)
    return int((same > COLLAPSED).sum())


def arrows(W, panel, k, extra=None):
    return [{"panel": panel, "feature": i + 1, "set": f"set {i // k + 1}",
             "x": round(float(W[0, i]), 4), "y": round(float(W[1, i]), 4), **(extra or {})}
            for i in range(W.shape[1])]


def build(trained):
    corr, anti, bases = (trained[f] for f in FAMILIES)
    k = corr.family.set_size
    cb, ab = best(corr), best(anti)
    densities = sorted({d for n, d in cb if n == 6}, reverse=True)
    sparse = [d for d in densities if d <= SPARSE]

    planes = (arrows(corr.model(cb[4, FOCUS_DENSITY])[0], "two correlated pairs", k)
              + arrows(anti.model(ab[4, FOCUS_DENSITY])[0], "two anticorrelated pairs",
                       anti.family.set_size))
    sweep, collapse = [], []
    for i, d in enumerate(densities):
        W = corr.model(cb[6, d])[0]
        sweep += arrows(W, "three correlated pairs", k, {"d_index": i})
        collapse.append({"density": d, "d_index": i, "collapsed": collapsed_sets(W, k),
                         "paper": paper_collapsed(d),
                         "final_loss": float(corr.arrays["final_loss"][cb[6, d]])})
    collapse = pd.DataFrame(collapse)

    bd = min(d for _, d in best(bases))
    Wb = bases.model(best(bases)[bases.family.instances[0].n, bd])[0]
    kb = bases.family.set_size
    G = Wb.T @ Wb
    gram = pd.DataFrame([{"i": i + 1, "j": j + 1, "value": round(float(G[i, j]), 4)}
                         for i in range(G.shape[0]) for j in range(G.shape[1])])
    within_b, between_b = set_cosines(Wb, kb)

    within_c = [set_cosines(corr.model(cb[4, d])[0], k)[0] for d in sparse]
    within_a = [set_cosines(anti.model(k_)[0], anti.family.set_size)[0] for k_ in ab.values()]
    densest = collapse.iloc[0]
    norms = np.linalg.norm(corr.model(cb[6, densest.density])[0], axis=0)
    facts = {"density": FOCUS_DENSITY,
             "correlated_within_cos": round(float(np.abs(np.concatenate(within_c)).max()), 2),
             "anticorrelated_within_cos": f"{np.concatenate(within_a).max():.2f}",
             "collapsed_sparsest": int(collapse.iloc[-1].collapsed),
             "collapsed_densest": int(densest.collapsed),
             "sparsest": densities[-1], "densest": densities[0],
             "hexagon_densities": ", ".join(f"{d:g}" for d in collapse[collapse.collapsed == 0]
                                            .density) or "none",
             "pca_norm": round(float(norms.mean()), 2),
             "basis_density": bd,
             "basis_within": round(float(np.abs(within_b).mean()), 3),
             "basis_between": round(float(np.abs(between_b).mean()), 3),
             "seeds": corr.family.seeds}
    # where our count of collapsed pairs is not the paper's, and the two counts there
    differ = collapse[collapse.collapsed != collapse.paper]
    facts.update({"disagree_densities": ", ".join(f"{d:g}" for d in differ.density) or "none",
                  "disagree_ours": " or ".join(map(str, sorted(set(differ.collapsed)))) or "none",
                  "disagree_paper": " or ".join(map(str, sorted(set(differ.paper)))) or "none"})

    scale = alt.Scale(domain=[-1.3, 1.3])
    color = alt.Color("set:N", scale=alt.Scale(range=PALETTE[:3]),
                      legend=alt.Legend(orient="bottom", title="feature set"))

    def plane(data, title, filt=None):
        base = alt.Chart(data) if filt is None else alt.Chart(data).transform_filter(filt)
        return arrows_from_origin(base, color, "feature:O", scale, titles=("dim 1", "dim 2")
                                  ).properties(width=200, height=200, title=title)

    planes = pd.DataFrame(planes)
    top = alt.hconcat(*(plane(planes[planes.panel == p], f"{p} (1 − S = {FOCUS_DENSITY:g})")
                        for p in ("two correlated pairs", "two anticorrelated pairs")))
    d_sel = index_slider("c_index", [f"{d:g}" for d in densities], "density 1 − S")
    hexes = plane(pd.DataFrame(sweep), "three correlated pairs", alt.datum.d_index == d_sel)
    x = alt.X("density:Q", scale=alt.Scale(type="log"), title="feature density 1 − S")
    steps = alt.Chart(collapse).mark_line(point=True, color=PALETTE[5]).encode(
        x=x, y=alt.Y("collapsed:Q", scale=alt.Scale(domain=[0, 3]), axis=alt.Axis(tickCount=4),
                     title="pairs collapsed"),
        tooltip=["density:Q", "collapsed:Q", "final_loss:Q"])
    paper = alt.Chart(collapse).mark_line(color="gray", strokeDash=[4, 3], interpolate="step").encode(
        x=x, y="paper:Q", tooltip=["density:Q", alt.Tooltip("paper:Q", title="paper (approx.)")])
    here = alt.Chart(collapse).transform_filter(alt.datum.d_index == d_sel).mark_point(
        size=160, color="#000000", filled=False, strokeWidth=2).encode(x=x, y="collapsed:Q")
    curve = alt.layer(paper, steps, here).properties(width=220, height=200,
                                              title="collapsed onto one direction")
    heat = alt.Chart(gram).mark_rect().encode(
        x=alt.X("j:O", title="feature j (sets 1–10, 11–20)"), y=alt.Y("i:O", title="feature i"),
        color=alt.Color("value:Q", scale=alt.Scale(scheme="blueorange", domain=[-1, 1]),
                        title="WᵀW"),
        tooltip=["i:O", "j:O", "value:Q"]).properties(
        width=260, height=260, title=f"WᵀW, two correlated sets of ten (1 − S = {bd:g})")
    chart = alt.vconcat(top, alt.hconcat(hexes, curve).add_params(d_sel), heat)

    caption = (f"Top: two pairs of features in m = 2 dimensions at feature density "
               f"{FOCUS_DENSITY:g}. Features that always appear together sit at right angles "
               f"(|cos| at most {facts['correlated_within_cos']} for every density up to "
               f"{SPARSE:g}), with the other pair on the opposite side; features that never "
               f"appear together sit opposite each other (every cosine "
               f"{facts['anticorrelated_within_cos']} to two decimals). Middle: three correlated pairs. At the "
               f"sparsest density ({facts['sparsest']:g}) {facts['collapsed_sparsest']} pairs "
               f"share a direction; as inputs get denser pairs collapse onto their sum, the "
               f"principal component, until at density {facts['densest']:g} "
               f"{facts['collapsed_densest']} do (dashed: the paper's approximate counts; at "
               f"{facts['disagree_densities']} ours has {facts['disagree_ours']} where the paper "
               f"has {facts['disagree_paper']}). Bottom: WᵀW of n = 20 features in m = 10 "
               f"dimensions, two correlated sets of ten: within a set the mean |cos| is "
               f"{facts['basis_within']}, a local orthogonal basis, against "
               f"{facts['basis_between']} between sets. Lowest-loss of {facts['seeds']} seeds "
               f"per point.")
    description = ("Arrow diagrams of feature directions in two dimensions for correlated and "
                   "anticorrelated feature pairs, an arrow diagram of three correlated pairs "
                   "with a density slider beside a step chart of how many pairs have collapsed "
                   "onto one direction, and a heatmap of W transpose W for twenty features in "
                   "two correlated sets.")
    return Figure(ID, "Correlated and anticorrelated features", caption, description, chart,
                  {"pairs": planes, "three_pairs": pd.DataFrame(sweep), "collapse": collapse,
                   "gram": gram}, FAMILIES,
                  {"selection": "lowest final loss of the seeds at each grid point",
                   "collapsed": f"a pair's cosine above {COLLAPSED}"}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "density": "feature density 1 − S of the top panels (two pairs in m = 2)",
    "correlated_within_cos": (
        "largest |cosine| between the two features of a correlated pair, in the lowest-loss "
        "two-pair model (n = 4) at every density up to 0.25", None, None, ["correlated"]),
    "anticorrelated_within_cos": (
        "largest cosine between the two features of an anticorrelated pair, in the lowest-loss "
        "model at every grid point", None, None, ["anticorrelated"]),
    "collapsed_sparsest": (
        "correlated pairs (of three, n = 6) whose features share one direction (cosine above "
        "0.95) at the sparsest density", "collapse", "the row of the lowest density",
        ["correlated"]),
    "collapsed_densest": (
        "correlated pairs (of three, n = 6) whose features share one direction (cosine above "
        "0.95) at the densest density", "collapse", "the row of the highest density",
        ["correlated"]),
    "sparsest": ("lowest feature density 1 − S of the three-pair sweep", "collapse",
                 "column density, smallest value", ["correlated"]),
    "densest": ("highest feature density 1 − S of the three-pair sweep", "collapse",
                "column density, largest value", ["correlated"]),
    "hexagon_densities": ("densities at which none of the three correlated pairs has collapsed "
                          "onto one direction", "collapse", "rows with collapsed = 0",
                          ["correlated"]),
    "pca_norm": ("mean column norm ‖W_i‖ of the densest three-pair model", "three_pairs",
                 "rows with d_index = 0, the length of (x, y)", ["correlated"]),
    "basis_density": ("feature density of the two-sets-of-ten model, n = 20 in m = 10 (the "
                      "lowest of its sweep)", "gram", None, ["local_bases"]),
    "basis_within": ("mean |cosine| between features of the same correlated set of ten, n = 20 "
                     "in m = 10", None, None, ["local_bases"]),
    "basis_between": ("mean |cosine| between features of different sets of ten, n = 20 in "
                      "m = 10", None, None, ["local_bases"]),
    "seeds": "seeds trained at each grid point; each panel shows the lowest-loss one",
    "disagree_densities": ("densities of the three-pair sweep where our count of collapsed pairs "
                           "is not the paper's (read from its figure's density ranges)",
                           "collapse", "rows with collapsed ≠ paper", ["correlated"]),
    "disagree_ours": ("our count of collapsed pairs at those densities", "collapse",
                      "rows with collapsed ≠ paper, column collapsed", ["correlated"]),
    "disagree_paper": ("the paper's count at those densities", "collapse",
                       "rows with collapsed ≠ paper, column paper", ["correlated"]),
}
