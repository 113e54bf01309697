"""The phase diagram for n=2, m=1: which solution the trained models find for each relative
importance of the second feature and each feature density, with the theory's boundaries."""
import altair as alt
import numpy as np
import pandas as pd

from precompute import phase_theory
from precompute.figures import PALETTE, Figure
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss

ID = "phase-diagram"
FAMILY = "phase"
FAMILIES = [FAMILY]
FACTS = ('agreement', 'cells', 'agree_cells', 'seeds', 'unanimous')  # the names build() puts in facts, for --check


def classify(W):
    """The regime of a trained W (1 x 2), named for the second (extra) feature."""
    return phase_theory.classify(W[0])


def build(trained):
    tr = trained[FAMILY]
    fam = tr.family
    best = lowest_loss(tr)
    found = np.array([classify(tr.model(k)[0]) for k in range(len(fam.instances))]).reshape(
        fam.seeds, fam.per_seed)
    solved = phase_theory.solve(fam, tr.cache_dir)
    theory, optimum = solved.regimes, solved.optimum
    cells = []
    for cell, k in enumerate(best):
        inst = fam.instances[k]
        W, _, _ = tr.model(k)
        share = {regime: float(np.mean(found[:, cell] == regime)) for regime in phase_theory.REGIMES}
        regime = found[inst.seed, cell]
        cells.append({"density": round(1.0 - inst.sparsity, 6), "importance": round(inst.importance[1], 6),
                      "regime": regime, "theory": theory[cell], "agrees": bool(regime == theory[cell]),
                      "seeds_in_regime": share[regime],
                      "share_not_represented": share["not represented"],
                      "share_dedicated": share["dedicated dimension"],
                      "share_superposition": share["superposition"],
                      "w1": round(float(W[0, 0]), 4), "w2": round(float(W[0, 1]), 4),
                      "theory_w1": round(float(optimum[cell, 0]), 4),
                      "theory_w2": round(float(optimum[cell, 1]), 4),
                      "seed": inst.seed, "final_loss": float(tr.arrays["final_loss"][k])})
    cells = pd.DataFrame(cells)
    densities = sorted(cells.density.unique())
    importances = sorted(cells.importance.unique())
    bounds = pd.DataFrame(solved.boundaries)
    agreement = float(cells.agrees.mean())
    facts = {"agreement": f"{100 * agreement:.0f}%", "cells": len(cells),
             "agree_cells": int(cells.agrees.sum()), "seeds": fam.seeds,
             "unanimous": f"{100 * float((cells.seeds_in_regime == 1).mean()):.0f}%"}

    # Cells are drawn as rectangles spanning half a log-step either side of each grid value.
    def edges(values):
        v = np.log10(values)
        step = (v[-1] - v[0]) / (len(v) - 1)
        return {x: (10 ** (np.log10(x) - step / 2), 10 ** (np.log10(x) + step / 2)) for x in values}
    de, ie = edges(densities), edges(importances)
    cells["d0"], cells["d1"] = zip(*[de[d] for d in cells.density])
    cells["i0"], cells["i1"] = zip(*[ie[i] for i in cells.importance])
    xs = alt.Scale(type="log", domain=[de[densities[-1]][1], de[densities[0]][0]],  # 1 on the left
                   nice=False)
    ys = alt.Scale(type="log", domain=[ie[importances[0]][0], ie[importances[-1]][1]], nice=False)
    regimes = list(phase_theory.REGIMES)
    rect = alt.Chart(cells).mark_rect().encode(
        x=alt.X("d0:Q", scale=xs, title="feature density 1 − S (sparser to the right)"),
        x2="d1:Q",
        y=alt.Y("i0:Q", scale=ys, title="relative importance of the extra feature"),
        y2="i1:Q",
        color=alt.Color("regime:N", scale=alt.Scale(domain=regimes, range=PALETTE[:3]),
                        title="trained model: extra feature is", legend=alt.Legend(orient="bottom", direction="vertical")),
        opacity=alt.Opacity("seeds_in_regime:Q", scale=alt.Scale(domain=[0, 1], range=[0.25, 0.95]),
                            title="share of seeds in that regime",
                            legend=alt.Legend(orient="bottom", format=".0%")),
        tooltip=["density:Q", "importance:Q", "regime:N", "theory:N", "w1:Q", "w2:Q",
                 alt.Tooltip("share_not_represented:Q", format=".0%"),
                 alt.Tooltip("share_dedicated:Q", format=".0%"),
                 alt.Tooltip("share_superposition:Q", format=".0%")])
    miss = alt.Chart(cells[~cells.agrees]).mark_point(shape="cross", color="black", size=40).encode(
        x="density:Q", y="importance:Q", tooltip=["regime:N", "theory:N"])
    line = alt.Chart(bounds).mark_line(color="black", strokeWidth=2, strokeDash=[5, 3]).encode(
        x="density:Q", y="importance:Q", detail="boundary:N", tooltip=["boundary:N"])
    chart = alt.layer(rect, line, miss).properties(width=380, height=340)

    caption = (f"One feature of importance 1 and an extra feature of varying importance, squeezed "
               f"into a single dimension. Colours show what the lowest-loss of {fam.seeds} trained "
               f"models does with the extra feature, and their strength the share of the "
               f"{fam.seeds} seeds that land in that regime ({facts['unanimous']} of cells are "
               f"unanimous). Dashed lines are where the theory's regime changes: the model of "
               f"lowest exact expected loss, minimised over both weights and both biases with no "
               f"sign limits. The trained models match the theory on {facts['agree_cells']} of "
               f"{facts['cells']} cells ({facts['agreement']}); crosses mark the rest.")
    description = ("Phase diagram: a grid of feature density against relative importance, "
                   "coloured by whether the extra feature is not represented, has a dedicated "
                   f"dimension, or is in superposition; theory agrees on {facts['agreement']}.")
    return Figure(ID, "Superposition as a phase change", caption, description, chart,
                  {"cells": cells.drop(columns=["d0", "d1", "i0", "i1"]), "boundaries": bounds},
                  FAMILIES, {"selection": "lowest paired-evaluation loss of the seeds at each cell",
                             "theory": "exact expected loss minimised over w1, w2, b1, b2 (grid, "
                                       "then descent)"}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "agreement": ("share of the grid's cells where the lowest-loss trained model puts the extra "
                  "feature in the regime the exact-loss theory predicts", "cells",
                  "column agrees, all rows"),
    "cells": ("cells of the density × importance grid", "cells", "every row"),
    "agree_cells": ("cells where the trained regime matches the theory", "cells",
                    "rows with agrees = true"),
    "seeds": "seeds trained at each cell; the lowest-loss one is drawn",
    "unanimous": ("share of cells where every seed lands in the same regime", "cells",
                  "rows with seeds_in_regime = 1"),
}
