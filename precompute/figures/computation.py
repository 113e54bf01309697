"""Computation in superposition (Elhage et al. 2022): the absolute-value model y' = ReLU(W2
ReLU(W1 x) + b) across feature density. Per density, how many features it computes (|x_i| from
x = t e_i, abs_model.feature_errors) and how its neurons split into monosemantic and polysemantic
ones (by their input weights, as lab_correlations reads neurons); and the paper's stacked plot of
|W1| per neuron for the densest and the sparsest model. Seeds: the lowest loss per density."""
import altair as alt
import numpy as np
import pandas as pd

from precompute import abs_model
from precompute.figures import Figure
from precompute.figures.lab_correlations import MONOSEMANTIC, neuron_shares
from precompute.models import lowest_loss

ID = "computation"
FAMILY = "computation"
FAMILIES = [FAMILY]
# the names build() puts in facts, for --check
FACTS = ("n", "m", "half_m", "dense_computed", "dense_both", "dense_dedicated",
         "dense_polysemantic", "sparse_density", "sparse_computed", "sparse_both",
         "sparse_one_sign", "sparse_polysemantic", "first_polysemantic_density", "most_computed",
         "most_computed_density", "seeds", "paper_n", "paper_m", "paper_tail_share",
         "paper_tail_importance", "paper_half_m", "dense_cutoff_importance",
         "paper_cutoff_importance", "dense_first_dropped", "dense_dropped_importance",
         "dense_extra_features", "dense_extra_neurons", "dense_other_computed")
DEAD = 0.1  # a neuron whose input weights have norm below this does nothing
# The paper's "Superposition vs Sparsity" sweep: n = 100 features on m = 40 neurons.
PAPER_N, PAPER_M = 100, 40


def neurons(W1):
    """Per neuron: 'monosemantic', 'polysemantic' or 'dead', and its largest feature."""
    top, _ = neuron_shares(W1)
    alive = np.linalg.norm(W1, axis=1) > DEAD
    kind = np.where(~alive, "dead", np.where(top >= MONOSEMANTIC, "monosemantic", "polysemantic"))
    return kind, np.abs(W1).argmax(axis=1)


def analyse(W1, W2, b):
    """What one model computes, and with which neurons: features' worth of |x| computed (the sum
    over features of 1 - error, clipped to [0, 1]), features computed for both signs and for one
    sign only, neuron kinds, and the fewest monosemantic neurons any both-signs feature has."""
    err = abs_model.feature_errors(W1, W2, b)
    both = err < abs_model.BOTH_SIGNS
    kind, primary = neurons(W1)
    mono = kind == "monosemantic"
    dedicated = [int((mono & (primary == i)).sum()) for i in np.flatnonzero(both)]
    return {"computed": round(float(np.clip(1 - err, 0, 1).sum()), 2),
            "both_signs": int(both.sum()), "one_sign": int((~both & (err < abs_model.ONE_SIGN)).sum()),
            "monosemantic": int(mono.sum()), "polysemantic": int((kind == "polysemantic").sum()),
            "dead": int((kind == "dead").sum()), "min_dedicated": min(dedicated, default=0)}


def dense_room(W1, W2, b, importance):
    """Where a dense model falls short of m/2 features: the first feature (1-based) it does not
    compute for both signs and its importance, the features whose largest weight sits in more
    than two of its neurons (1-based) and how many neurons they take."""
    err = abs_model.feature_errors(W1, W2, b)
    first = int(np.flatnonzero(err >= abs_model.BOTH_SIGNS)[0])
    _, primary = neurons(W1)
    per = np.bincount(primary, minlength=len(err))
    extra = np.flatnonzero(per > 2)
    return {"dense_first_dropped": first + 1,
            "dense_dropped_importance": f"{importance[first]:.2f}",
            "dense_extra_features": " and ".join(str(i + 1) for i in extra) or "none",
            "dense_extra_neurons": " and ".join(str(per[i]) for i in dict.fromkeys(
                per[extra])) if len(extra) else "none"}


def paper_size(importance, n, m):
    """What a smaller n at the paper's n/m changes when importance is d^i: d^i depends on the
    index, not on n, so our n features are the paper's first n and its other PAPER_N - n (share
    of its total importance, and the largest of them) are what is dropped; the neurons are what
    shrinks. Dense, two neurons per feature leave room for m/2 features: the importance of the
    first feature past them, ours against the paper's."""
    d = importance[1] / importance[0]
    paper = d ** np.arange(PAPER_N)
    return {"paper_n": PAPER_N, "paper_m": PAPER_M, "paper_half_m": PAPER_M // 2,
            "paper_tail_share": f"{100 * paper[n:].sum() / paper.sum():.3f}%",
            "paper_tail_importance": f"{paper[n]:.2g}",
            "dense_cutoff_importance": f"{d ** (m // 2):.2f}",
            "paper_cutoff_importance": f"{d ** (PAPER_M // 2):.3f}"}


def stack(W1, label):
    """The paper's stacked weight plot: |W1| per neuron, one segment per feature, neurons sorted
    by their largest feature (the most important first)."""
    kind, primary = neurons(W1)
    order = np.argsort(primary, kind="stable")
    return [{"model": label, "neuron": rank + 1, "feature": i + 1, "weight": round(float(w), 4),
             "kind": kind[j]}
            for rank, j in enumerate(order) for i, w in enumerate(np.abs(W1[j])) if w > 1e-3]


def build(trained):
    tr = trained[FAMILY]
    fam = tr.family
    rows, best = [], {}
    for k in lowest_loss(tr):
        inst = fam.instances[k]
        W1, b, _ = tr.model(k)
        W2 = tr.arrays["W2"][k][:inst.n]
        density = round(1 - inst.sparsity, 6)
        best[density] = (W1, W2, b)
        rows.append({"density": density, **analyse(W1, W2, b),
                     "final_loss": float(tr.arrays["final_loss"][k]), "seed": inst.seed})
    counts = pd.DataFrame(rows).sort_values("density", ascending=False)
    dense, sparse = counts.iloc[0], counts.iloc[-1]
    # the densest grid point's other seeds, for how far the best one is from the rest
    others = []
    for k, inst in enumerate(fam.instances):
        if round(1 - inst.sparsity, 6) == dense.density and inst.seed != dense.seed:
            W1, b, _ = tr.model(k)
            others.append(analyse(W1, tr.arrays["W2"][k][:inst.n], b)["computed"])
    poly = counts[counts.polysemantic > 0]
    n, m = fam.instances[0].n, fam.m
    most = counts.loc[counts.computed.idxmax()]
    facts = {"n": n, "m": m, "half_m": m // 2,
             "dense_computed": f"{dense.computed:.1f}", "dense_both": int(dense.both_signs),
             "dense_dedicated": int(dense.min_dedicated),
             "dense_polysemantic": int(dense.polysemantic),
             "sparse_density": float(sparse.density), "sparse_computed": f"{sparse.computed:.1f}",
             "sparse_both": int(sparse.both_signs), "sparse_one_sign": int(sparse.one_sign),
             "sparse_polysemantic": int(sparse.polysemantic),
             "first_polysemantic_density": float(poly.density.max()) if len(poly) else "none",
             "most_computed": f"{most.computed:.1f}", "most_computed_density": float(most.density),
             "seeds": fam.seeds, **paper_size(fam.instances[0].importance, n, m),
             **dense_room(*best[dense.density], fam.instances[0].importance),
             "dense_other_computed": " and ".join(f"{v:.1f}" for v in others) or "none"}

    dense_label = f"densest (1 − S = {dense.density:g})"
    sparse_label = f"sparsest (1 − S = {sparse.density:g})"
    stacks = pd.DataFrame(stack(best[dense.density][0], dense_label)
                          + stack(best[sparse.density][0], sparse_label))
    x = alt.X("density:Q", scale=alt.Scale(type="log", reverse=True),
              title="feature density 1 − S (sparser to the right)")

    names = {"computed": "features' worth computed", "both_signs": "both signs computed",
             "one_sign": "one sign only", "monosemantic": "monosemantic",
             "polysemantic": "polysemantic"}

    def lines(fields, colors, title, rule=None):
        long = counts.melt(id_vars=["density"], value_vars=fields, var_name="count of",
                           value_name="number")
        long["count of"] = long["count of"].map(names)
        chart = alt.Chart(long).mark_line(point=True).encode(
            x=x, y=alt.Y("number:Q", title=title),
            color=alt.Color("count of:N", scale=alt.Scale(domain=[names[f] for f in fields],
                                                          range=colors),
                            legend=alt.Legend(orient="bottom", title=None, columns=1)),
            tooltip=["density:Q", "count of:N", "number:Q"])
        if rule:
            ref = alt.Chart(pd.DataFrame([{"y": m / 2, "label": rule}]))
            chart = alt.layer(chart, ref.mark_rule(strokeDash=[4, 3], color="gray").encode(y="y:Q"),
                              ref.mark_text(align="left", dx=4, dy=-6, color="gray", x=0).encode(
                                  y="y:Q", text="label:N"))
        return chart.properties(width=230, height=200)

    features = lines(["computed", "both_signs", "one_sign"], ["#000000", "#CC79A7", "#E69F00"],
                     "features", "m/2: two neurons each").properties(title="features computed")
    cells = lines(["monosemantic", "polysemantic"], ["#0072B2", "#D55E00"], "neurons"
                  ).properties(title="neurons")
    bars = alt.Chart(stacks).mark_bar().encode(
        x=alt.X("neuron:O", title="neuron (sorted by its largest feature)",
                axis=alt.Axis(labels=False, ticks=False)),
        y=alt.Y("weight:Q", title="|W1| stacked over features"),
        color=alt.Color("feature:Q", scale=alt.Scale(scheme="viridis"),
                        title="feature (1 = most important)"),
        order=alt.Order("feature:Q"),
        tooltip=["neuron:O", "feature:Q", "weight:Q", "kind:N"]).properties(width=230, height=200)
    panels = alt.hconcat(*(bars.transform_filter(alt.datum.model == label).properties(title=label)
                           for label in (dense_label, sparse_label)))
    chart = alt.vconcat(alt.hconcat(features, cells).resolve_scale(color="independent"), panels)

    caption = (f"The paper's absolute-value model with n = {n} features on m = {m} neurons and "
               f"importance 0.8^i (the paper: n = {PAPER_N}, m = {PAPER_M}; the same ratio, but "
               f"the same first {n} features on fewer neurons, since 0.8^i does not depend on n). "
               f"Each feature alone, "
               f"x = t eᵢ, is scored by the relative error e of y′ᵢ against |t|: both signs "
               f"computed (e < {abs_model.BOTH_SIGNS}), one sign only (e < {abs_model.ONE_SIGN}, "
               f"one ReLU's worth), and 'computed', the features' worth Σ(1 − e). A neuron is "
               f"monosemantic when one feature holds {MONOSEMANTIC:.0%} of its squared input "
               f"weights. Dense: {facts['dense_computed']} features' worth, "
               f"{facts['dense_both']} features with both signs and at least "
               f"{facts['dense_dedicated']} dedicated neurons each (|x| = ReLU(x) + ReLU(−x)), "
               f"so at most m/2 = {m // 2}. At density {facts['sparse_density']:g}: "
               f"{facts['sparse_computed']} features' worth on {m} neurons, "
               f"{facts['sparse_polysemantic']} of them polysemantic, mostly one sign per feature "
               f"({facts['sparse_one_sign']} one-sign, {facts['sparse_both']} both). Bottom: |W1| "
               f"stacked per neuron, coloured by feature. Lowest-loss of {fam.seeds} seeds per "
               f"density.")
    description = ("Two line charts against feature density: features computed (in all, for "
                   "both signs, for one sign), with a dashed line at half the neurons, and "
                   "monosemantic and polysemantic neurons; then two "
                   "stacked bar charts of each neuron's absolute input weights by feature for "
                   "the densest and the sparsest model.")
    return Figure(ID, "Computation in superposition", caption, description, chart,
                  {"counts": counts, "weights": stacks}, FAMILIES,
                  {"selection": "lowest final loss of the seeds at each density",
                   "computed": "sum over features of 1 - relative error of y'_i on x = t e_i",
                   "monosemantic": f"top feature's share of squared input weights >= "
                                   f"{MONOSEMANTIC}"}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "n": "features n of the absolute-value models",
    "m": "hidden neurons m of the absolute-value models",
    "half_m": "half the neurons, m/2",
    "dense_computed": ("features' worth of |x_i| the densest lowest-loss model computes (the sum "
                       "of 1 − error, clipped to [0, 1])", "counts", "the densest row, column "
                       "computed"),
    "dense_both": ("features the densest model computes for both signs of x_i", "counts",
                   "the densest row, column both_signs"),
    "dense_dedicated": ("fewest monosemantic neurons any both-signs feature has in the densest "
                        "model", "counts", "the densest row, column min_dedicated"),
    "dense_polysemantic": ("polysemantic neurons in the densest model", "counts",
                           "the densest row, column polysemantic"),
    "sparse_density": ("feature density 1 − S of the sparsest model", "counts",
                       "the sparsest row, column density"),
    "sparse_computed": ("features' worth of |x_i| the sparsest model computes", "counts",
                        "the sparsest row, column computed"),
    "sparse_both": ("features the sparsest model computes for both signs", "counts",
                    "the sparsest row, column both_signs"),
    "sparse_one_sign": ("features the sparsest model computes for one sign only", "counts",
                        "the sparsest row, column one_sign"),
    "sparse_polysemantic": ("polysemantic neurons in the sparsest model", "counts",
                            "the sparsest row, column polysemantic"),
    "first_polysemantic_density": ("highest density whose model has a polysemantic neuron",
                                   "counts", "rows with polysemantic > 0, the largest density"),
    "most_computed": ("most features' worth computed by any density's model", "counts",
                      "the row with the largest computed"),
    "most_computed_density": ("density of that model", "counts",
                              "the row with the largest computed, column density"),
    "seeds": "seeds trained at each density; the lowest-loss one is drawn",
    "paper_n": "features n of the paper's absolute-value sweep (its \"Superposition vs Sparsity\")",
    "paper_m": "hidden neurons m of the paper's absolute-value sweep",
    "paper_half_m": "half the paper's neurons, m/2: its dense room at two neurons per feature",
    "paper_tail_share": ("share of the paper's total importance (Σ d^i over its n features, d "
                         "the importance ratio of feature 2 to feature 1) held by its features "
                         "past our n, the ones our model drops; from the importance law, not a "
                         "model"),
    "paper_tail_importance": ("importance d^n of the paper's first feature past our n, the most "
                              "important one our model drops (feature 1's is 1)"),
    "dense_cutoff_importance": ("importance d^(m/2) of the first feature past our m/2: the most "
                                "important one a dense model of ours has no room for at two "
                                "neurons per feature"),
    "dense_first_dropped": ("the first feature (1 = most important) the densest lowest-loss "
                            "model does not compute for both signs (its x = t e_i error, "
                            "abs_model.feature_errors, is 0.25 or more)"),
    "dense_dropped_importance": "importance 0.8^(i − 1) of that feature i",
    "dense_extra_features": ("features (1 = most important) that are the largest weight of more "
                             "than two neurons in the densest model", "weights",
                             "the densest model's rows, each neuron's largest feature"),
    "dense_extra_neurons": ("how many neurons each of those features takes", "weights",
                            "the densest model's rows, each neuron's largest feature"),
    "dense_other_computed": ("features' worth computed by the densest grid point's other seeds",
                             None, None),
    "paper_cutoff_importance": ("the same at the paper's size: importance d^(m/2) of its first "
                                "feature past its m/2"),
}
