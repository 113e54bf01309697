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
LEGEND_GREY = "#999999"
FAMILY = "phase"
FAMILIES = [FAMILY]
FACTS = ('agreement', 'cells', 'agree_cells', 'seeds', 'kept_seeds', 'unanimous', 'average_agreement',
         'average_agree_cells', 'average_short_of_superposition', 'split_density', 'split_close',
         'split_middle', 'split_far')  # the names build() puts in facts, for --check
# Where the kept seeds split: below SPLIT_DENSITY, the mean share of them in superposition by how
# far apart the two importances are (the larger over the smaller): up to the first bound, between
# the two, and from the second on.
SPLIT_DENSITY, SPLIT_RATIOS = 0.1, (2.0, 4.0)


def split_shares(cells):
    """The three mean shares of kept seeds in superposition that SPLIT_RATIOS define, over the
    cells below SPLIT_DENSITY."""
    sparse = cells[cells.density < SPLIT_DENSITY]
    ratio = np.maximum(sparse.importance, 1 / sparse.importance)
    lo, hi = SPLIT_RATIOS
    groups = (ratio <= lo, (ratio > lo) & (ratio < hi), ratio >= hi)
    return [float(sparse.share_superposition[g].mean()) for g in groups]


def classify(W):
    """The regime of a trained W (1 x 2), named for the second (extra) feature."""
    return phase_theory.classify(W[0])


def build(trained):
    tr = trained[FAMILY]
    fam = tr.family
    best = lowest_loss(tr)
    found = np.array([classify(tr.model(k)[0]) for k in range(len(fam.instances))]).reshape(
        fam.seeds, fam.per_seed)
    # The paper's empirical diagram: ten models per point, the highest-loss one dropped, the rest
    # averaged. The colour is the lowest-loss seed's regime, the fair match for a theory of the
    # lowest expected loss; the strength is the share of the kept seeds in that regime.
    losses = tr.arrays["final_loss"].reshape(fam.seeds, fam.per_seed)
    kept = np.take_along_axis(found, losses.argsort(0, kind="stable")[:max(fam.seeds - 1, 1)], 0)
    solved = phase_theory.solve(fam, tr.cache_dir)
    theory, optimum = solved.regimes, solved.optimum
    cells = []
    for cell, k in enumerate(best):
        inst = fam.instances[k]
        W, _, _ = tr.model(k)
        share = {regime: float(np.mean(kept[:, cell] == regime)) for regime in phase_theory.REGIMES}
        regime = found[inst.seed, cell]
        # the regime most kept seeds take (None on a tie): the paper's averaged picture
        top = sorted(share.values())[-2:]
        average = max(share, key=share.get) if top[1] > top[0] else None
        cells.append({"density": round(1.0 - inst.sparsity, 6), "importance": round(inst.importance[1], 6),
                      "regime": regime, "theory": theory[cell], "agrees": bool(regime == theory[cell]),
                      "seeds_in_regime": share[regime], "average_regime": average,
                      "average_agrees": bool(average == theory[cell]),
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
    facts = {"agreement": f"{100 * agreement:.1f}%", "cells": len(cells),
             "agree_cells": int(cells.agrees.sum()), "seeds": fam.seeds,
             "kept_seeds": len(kept), "unanimous": f"{100 * float((cells.seeds_in_regime == 1).mean()):.0f}%",
             "average_agreement": f"{100 * float(cells.average_agrees.mean()):.1f}%",
             "average_agree_cells": int(cells.average_agrees.sum()),
             "average_short_of_superposition": int(((cells.theory == "superposition")
                                                    & (cells.average_regime != "superposition")).sum()),
             "split_density": f"{SPLIT_DENSITY:g}",
             **{name: f"{100 * v:.0f}%" if v < 0.99 else f"{100 * v:.1f}%"
                for name, v in zip(("split_close", "split_middle", "split_far"), split_shares(cells))}}

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
                            title=f"share of the {len(kept)} kept seeds in that regime",
                            # a mid grey ramps from the background in either theme (the default
                            # black steps vanish on a dark one)
                            legend=alt.Legend(orient="bottom", format=".0%", symbolType="square",
                                              symbolSize=160, symbolFillColor=LEGEND_GREY,
                                              symbolStrokeWidth=0, titleLimit=400)),
        tooltip=["density:Q", "importance:Q", "regime:N", "theory:N", "w1:Q", "w2:Q",
                 alt.Tooltip("share_not_represented:Q", format=".0%"),
                 alt.Tooltip("share_dedicated:Q", format=".0%"),
                 alt.Tooltip("share_superposition:Q", format=".0%"),
                 alt.Tooltip("average_regime:N", title="most kept seeds")])
    # Black marks in a white casing read on every cell colour, over a light or a dark background.
    miss = alt.Chart(cells[~cells.agrees]).mark_point(
        shape="cross", filled=True, fill="black", stroke="white", strokeWidth=1.2, opacity=1,
        size=90).encode(x="density:Q", y="importance:Q", tooltip=["regime:N", "theory:N"])
    edge = alt.Chart(bounds).encode(x="density:Q", y="importance:Q", detail="boundary:N",
                                    tooltip=["boundary:N"])
    line = edge.mark_line(color="white", strokeWidth=4.5) + \
        edge.mark_line(color="black", strokeWidth=2, strokeDash=[5, 3])
    chart = alt.layer(rect, line, miss).properties(width=380, height=340)

    caption = (f"One feature of importance 1 and an extra feature of varying importance, squeezed "
               f"into a single dimension. Colours show what the lowest-loss of {fam.seeds} trained "
               f"models does with the extra feature, and their strength the share of the "
               f"{len(kept)} lowest-loss seeds that land in that regime (the paper's averaging: "
               f"the highest-loss seed dropped; {facts['unanimous']} of cells are unanimous). "
               f"Dashed lines are where the theory's regime changes: the model of "
               f"lowest exact expected loss, minimised over both weights and both biases with no "
               f"sign limits. The trained models match the theory on {facts['agree_cells']} of "
               f"{facts['cells']} cells ({facts['agreement']}); crosses mark the rest.")
    description = ("Phase diagram: a grid of feature density against relative importance, "
                   "coloured by whether the extra feature is not represented, has a dedicated "
                   f"dimension, or is in superposition; theory agrees on {facts['agreement']}.")
    return Figure(ID, "Superposition as a phase change", caption, description, chart,
                  {"cells": cells.drop(columns=["d0", "d1", "i0", "i1"]), "boundaries": bounds},
                  FAMILIES, {"selection": "lowest paired-evaluation loss of the seeds at each cell",
                             "seed shares": f"the {len(kept)} lowest-loss of {fam.seeds} seeds (the "
                                            "paper's: the highest-loss one dropped)",
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
    "seeds": "seeds trained at each cell; the lowest-loss one gives the cell its colour",
    "kept_seeds": ("seeds kept at each cell for the paper's averaging: all but the highest-loss "
                   "one; the colour's strength is the share of them in the drawn regime", "cells",
                   "column seeds_in_regime"),
    "unanimous": ("share of cells where all the kept seeds (the highest-loss one dropped) land in "
                  "the lowest-loss seed's regime", "cells", "rows with seeds_in_regime = 1"),
    "average_agreement": ("share of cells where the regime most kept seeds take (the paper's "
                          "averaged reading; a tie counts as a miss) is the theory's", "cells",
                          "column average_agrees, all rows"),
    "average_agree_cells": ("cells where the regime most kept seeds take is the theory's", "cells",
                            "rows with average_agrees = true"),
    "average_short_of_superposition": ("cells where the theory's optimum is superposition but "
                                       "most kept seeds take another regime (or tie)", "cells",
                                       "rows with theory = superposition and average_regime "
                                       "not superposition"),
    "split_density": "feature density below which the split_* shares are taken",
    "split_close": ("mean share of the kept seeds in superposition over the cells below "
                    "split_density whose two importances are within a factor of two", "cells",
                    "rows with density < 0.1 and importance from 1/2 to 2, column "
                    "share_superposition"),
    "split_middle": ("the same over the cells whose importances differ by a factor between two "
                     "and four", "cells", "rows with density < 0.1 and importance in (2, 4) or "
                     "(1/4, 1/2), column share_superposition"),
    "split_far": ("the same over the cells where one importance is at least four times the other",
                  "cells", "rows with density < 0.1 and importance ≥ 4 or ≤ 1/4, column "
                  "share_superposition"),
}
