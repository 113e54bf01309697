"""Feature dimensionality under uniform importance: dimensions per feature m/||W||_F^2 against
1/(1-S), each feature's D_i as a dot, and the fractions the paper names as reference lines."""
from fractions import Fraction

import altair as alt
import pandas as pd

from precompute import metrics
from precompute.figures import PALETTE, Figure
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss

ID = "dimensionality"
FAMILY = "dimensionality"
FAMILIES = [FAMILY]
# the names build() puts in facts, for --check
FACTS = ('n', 'm', 'seeds', 'dense_dstar', 'second_density', 'second_dstar', 'third_density',
         'third_dstar', 'half_from', 'half_to', 'half_features', 'pairs_from',
         'pairs_to', 'at_3_4',
         'at_2_3', 'at_1_2', 'at_2_5', 'at_3_8', 'where_3_4', 'where_2_3', 'where_1_2',
         'where_2_5', 'where_3_8', 'models_3_4', 'models_2_3', 'models_1_2', 'models_2_5',
         'models_3_8', 'sparsest_density', 'below_third_from', 'sparsest_max_d',
         'dense_represented_3', 'dense_represented_5', 'dense_represented_7')
FRACTIONS = [Fraction(1), Fraction(3, 4), Fraction(2, 3), Fraction(1, 2), Fraction(2, 5),
             Fraction(3, 8), Fraction(1, 3)]
# Dense models here spread the m dimensions thinly over many features (norms well below 1), so
# the represented count depends on the norm threshold there: report it at several.
THRESHOLDS = (0.3, 0.5, 0.7)
# D* "sticks" at a value where it stays this close to it over consecutive densities; the
# paper-size plateau at 1/2 reads 0.511, 0.500, 0.496 (brief facts), so 0.03 separates a flat step
# from a slope through the value.
STICK = 0.03


def stretch(curve, near):
    """1/(1-S) of the first and last density of the longest run of consecutive densities where
    `near` (a boolean per row) holds, and the run's rows; (None, None, empty) if there is none."""
    near = list(near)
    best, start = (0, 0), None
    for i, v in enumerate(near + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            best, start = max(best, (i - start, start)), None
    rows = curve.iloc[best[1]:best[1] + best[0]]
    return (rows.inv_density.min(), rows.inv_density.max(), rows) if len(rows) else \
        (None, None, rows)


def build(trained):
    tr = trained[FAMILY]
    fam = tr.family
    curve, dots = [], []
    for k in lowest_loss(tr):
        inst = fam.instances[k]
        W, _, _ = tr.model(k)
        geo = metrics.geometry(W)
        inv = round(1.0 / (1.0 - inst.sparsity), 4)
        rep = geo["norm"] > REPRESENTED
        curve.append({"inv_density": inv, "sparsity": inst.sparsity, "seed": inst.seed,
                      "dims_per_feature": round(geo["dims_per_feature"], 4),
                      **{f"represented_{t}": int((geo["norm"] > t).sum()) for t in THRESHOLDS},
                      "at_half": int((abs(geo["dimensionality"][rep] - 0.5) < 0.02).sum()),
                      "final_loss": float(tr.arrays["final_loss"][k])})
        for i in range(inst.n):
            if rep[i]:
                dots.append({"inv_density": inv, "feature": i + 1,
                             "D": round(float(geo["dimensionality"][i]), 4)})
    curve, dots = pd.DataFrame(curve).sort_values("inv_density"), pd.DataFrame(dots)
    # At the dense end D* starts at 1 and first falls slowly, then fast: give the first three
    # densities as they are (the step at 1 is much less flat here than the one at 1/2).
    first = curve.iloc[:3]
    half_from, half_to, half = stretch(curve, (curve.dims_per_feature - 0.5).abs() < STICK)
    # where (nearly) every represented feature is in an antipodal pair, whatever D* reads
    pairs_from, pairs_to, _ = stretch(curve, curve.at_half >= 0.95 * curve["represented_0.5"].clip(1))
    fmt = lambda v: "none" if v is None else f"{v:.1f}"
    facts = {"n": fam.instances[0].n, "m": fam.m, "seeds": fam.seeds,
             "dense_dstar": f"{first.dims_per_feature.iloc[0]:.2f}",
             **{f"{which}_{what}": f"{first[col].iloc[i]:.{digits}f}"
                for i, which in ((1, "second"), (2, "third"))
                for what, col, digits in (("density", "inv_density", 1),
                                          ("dstar", "dims_per_feature", 2))},
             "half_from": fmt(half_from), "half_to": fmt(half_to),
             "half_features": int(half.at_half.max()) if len(half) else 0,
             "pairs_from": fmt(pairs_from), "pairs_to": fmt(pairs_to)}
    # How many represented features (all densities) sit within 0.02 of each named fraction D_i,
    # and at which densities (models) they are: a fraction seen in one model is one arrangement
    # at one density, not a step the sweep passes through.
    for f in FRACTIONS[1:-1]:
        name = f"{f.numerator}_{f.denominator}"
        at = dots[(dots.D - float(f)).abs() < 0.02]
        where = sorted(set(at.inv_density))
        facts.update({f"at_{name}": len(at), f"models_{name}": len(where),
                      f"where_{name}": ", ".join(f"{v:.1f}" for v in where) or "none"})
    # The sparse end: from where on every represented feature sits below the 1/3 guide line,
    # sharing its dimension more than any named arrangement does.
    top = dots.groupby("inv_density").D.max()
    below = top < float(FRACTIONS[-1])
    tail = below[::-1].cummin()[::-1]  # True from a density on where all sparser ones are below
    facts.update({"sparsest_density": f"{curve.inv_density.max():.0f}",
                  "below_third_from": f"{tail[tail].index.min():.1f}" if tail.any() else "none",
                  "sparsest_max_d": f"{top.iloc[-1]:.2f}"})
    dense = curve.iloc[0]
    facts.update({f"dense_represented_{str(t)[2:]}": int(dense[f"represented_{t}"])
                  for t in THRESHOLDS})
    refs = pd.DataFrame([{"D": float(f), "label": str(f), "guide": f == Fraction(1, 3)}
                         for f in FRACTIONS])

    x = alt.X("inv_density:Q", scale=alt.Scale(type="log"), title="1 / (1 − S)")
    y = alt.Y("D:Q", scale=alt.Scale(domain=[0, 1.1]), title="dimensions per feature")
    rules = alt.Chart(refs).mark_rule(color="gray", opacity=0.6).encode(
        y="D:Q", strokeDash=alt.condition(alt.datum.guide, alt.value([2, 3]), alt.value([6, 2])))
    labels = alt.Chart(refs).mark_text(align="left", x=505, fontSize=10, color="gray").encode(
        y="D:Q", text="label:N")
    points = alt.Chart(dots).mark_point(filled=True, size=14, opacity=0.35, color=PALETTE[0]
                                        ).encode(x=x, y=y, tooltip=["inv_density:Q", "feature:O", "D:Q"])
    line = alt.Chart(curve).mark_line(color=PALETTE[5], strokeWidth=2.5, point=True).encode(
        x=x, y=alt.Y("dims_per_feature:Q"), tooltip=["sparsity:Q", "dims_per_feature:Q"])
    chart = alt.layer(rules, labels, points, line).properties(width=500, height=300)

    caption = (f"n = {facts['n']} features of equal importance in m = {facts['m']} dimensions, "
               f"the best of {facts['seeds']} seeds at each density. The line is D* = m/‖W‖²_F, "
               f"the dimensions the model spends per feature it stores; dots are individual "
               f"represented features' dimensionality Dᵢ. Reference lines mark the fractions the "
               f"paper names (1/3 dotted, as a guide). D* is {facts['dense_dstar']} at the "
               f"densest point and {facts['second_dstar']} at 1/(1−S) = "
               f"{facts['second_density']}, then falls faster ({facts['third_dstar']} at "
               f"{facts['third_density']}); it stays within {STICK} of 1/2, every represented "
               f"feature in an antipodal pair, from {facts['half_from']} to {facts['half_to']}.")
    description = ("Line chart of dimensions per feature against inverse feature density on a "
                   "log axis, with dots for each feature's dimensionality and horizontal "
                   "reference lines at 1, 3/4, 2/3, 1/2, 2/5, 3/8 and 1/3.")
    return Figure(ID, "Feature dimensionality", caption, description, chart,
                  {"dims_per_feature": curve, "features": dots}, FAMILIES,
                  {"represented": f"||W_i|| > {REPRESENTED}", "seed": "lowest loss per density",
                   "sticks": f"|D* - value| < {STICK} at consecutive densities"}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
_AT = ("represented features, over every density's lowest-loss model, with D_i within 0.02 of "
       "{}", "features", "rows with |D − {}| < 0.02")
_WHERE = ("1/(1 − S) of each density whose lowest-loss model has a represented feature with D_i "
          "within 0.02 of {} (\"none\" if no model has one)", "features",
          "column inv_density of the rows with |D − {}| < 0.02")
_MODELS = ("densities (one lowest-loss model each) with a represented feature whose D_i is within "
           "0.02 of {}", "features", "distinct inv_density of the rows with |D − {}| < 0.02")
FACT_NOTES = {
    "n": "features n (of equal importance) in every model of the sweep",
    "m": "hidden dimensions m of every model of the sweep",
    "seeds": "seeds trained at each density; the lowest-loss one is drawn",
    "dense_dstar": ("D* = m / ‖W‖²_F, dimensions per feature, of the densest lowest-loss model",
                    "dims_per_feature", "the first row, column dims_per_feature"),
    "second_density": ("1/(1 − S) of the second densest point of the sweep", "dims_per_feature",
                       "the second row, column inv_density"),
    "second_dstar": ("D* at the second densest point", "dims_per_feature",
                     "the second row, column dims_per_feature"),
    "third_density": ("1/(1 − S) of the third densest point", "dims_per_feature",
                      "the third row, column inv_density"),
    "third_dstar": ("D* at the third densest point", "dims_per_feature",
                    "the third row, column dims_per_feature"),
    "half_from": ("1/(1 − S) where the longest run of densities with D* within 0.03 of 1/2 "
                  "begins", "dims_per_feature", "rows with |dims_per_feature − 0.5| < 0.03"),
    "half_to": ("1/(1 − S) where that run ends", "dims_per_feature",
                "rows with |dims_per_feature − 0.5| < 0.03"),
    "half_features": ("most features with D_i within 0.02 of 1/2 in any model of that run",
                      "dims_per_feature", "column at_half over that run"),
    "pairs_from": ("1/(1 − S) where the longest run begins in which at least 95% of the "
                   "represented features have D_i within 0.02 of 1/2", "dims_per_feature",
                   "rows with at_half ≥ 0.95 × represented_0.5"),
    "pairs_to": ("1/(1 − S) where that run ends", "dims_per_feature",
                 "rows with at_half ≥ 0.95 × represented_0.5"),
    "at_3_4": (_AT[0].format("3/4"), _AT[1], _AT[2].format("0.75")),
    "at_2_3": (_AT[0].format("2/3"), _AT[1], _AT[2].format("2/3")),
    "at_1_2": (_AT[0].format("1/2"), _AT[1], _AT[2].format("0.5")),
    "at_2_5": (_AT[0].format("2/5"), _AT[1], _AT[2].format("0.4")),
    "at_3_8": (_AT[0].format("3/8"), _AT[1], _AT[2].format("0.375")),
    "where_3_4": (_WHERE[0].format("3/4"), _WHERE[1], _WHERE[2].format("0.75")),
    "where_2_3": (_WHERE[0].format("2/3"), _WHERE[1], _WHERE[2].format("2/3")),
    "where_1_2": (_WHERE[0].format("1/2"), _WHERE[1], _WHERE[2].format("0.5")),
    "where_2_5": (_WHERE[0].format("2/5"), _WHERE[1], _WHERE[2].format("0.4")),
    "where_3_8": (_WHERE[0].format("3/8"), _WHERE[1], _WHERE[2].format("0.375")),
    "models_3_4": (_MODELS[0].format("3/4"), _MODELS[1], _MODELS[2].format("0.75")),
    "models_2_3": (_MODELS[0].format("2/3"), _MODELS[1], _MODELS[2].format("2/3")),
    "models_1_2": (_MODELS[0].format("1/2"), _MODELS[1], _MODELS[2].format("0.5")),
    "models_2_5": (_MODELS[0].format("2/5"), _MODELS[1], _MODELS[2].format("0.4")),
    "models_3_8": (_MODELS[0].format("3/8"), _MODELS[1], _MODELS[2].format("0.375")),
    "sparsest_density": ("1/(1 − S) of the sparsest point of the sweep", "dims_per_feature",
                         "the last row, column inv_density"),
    "below_third_from": ("1/(1 − S) from which on, to the sparsest point, every density's "
                         "lowest-loss model has all its represented features' D_i below 1/3",
                         "features", "the largest D per inv_density, below 1/3 from there on"),
    "sparsest_max_d": ("the largest D_i of a represented feature in the sparsest model",
                       "features", "rows with the largest inv_density, column D"),
    "dense_represented_3": ("features with ‖W_i‖ > 0.3 in the densest lowest-loss model",
                            "dims_per_feature", "the first row, column represented_0.3"),
    "dense_represented_5": ("features with ‖W_i‖ > 0.5 in the densest lowest-loss model",
                            "dims_per_feature", "the first row, column represented_0.5"),
    "dense_represented_7": ("features with ‖W_i‖ > 0.7 in the densest lowest-loss model",
                            "dims_per_feature", "the first row, column represented_0.7"),
}
