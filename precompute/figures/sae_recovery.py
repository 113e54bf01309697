"""Lab 3.4: sparse autoencoders trained on the toy models' hidden activations recover the true
feature directions once the dictionary has room for them. Left: mean max cosine similarity
(MMCS) against dictionary size and L1 coefficient. Right: for the two-dimensional pentagon, the
true directions beside the learned dictionary, each atom coloured by the feature it matches."""
import altair as alt
import pandas as pd

from precompute.figures import PALETTE, Figure, arrows_from_origin, sparsity_label

ID = "sae-recovery"
FAMILIES = ["sae.superposition", "sae.packing2d"]
# the names build() puts in facts, for --check
FACTS = ('m', 'n', 'best_at_n', 'best_at_m', 'targets', 'represented', 'best_with_room',
         'mid_size', 'mid_best', 'best_l1', 'l1_range', 'l1_interior')


def build(trained):
    big, small = trained["sae.superposition"], trained["sae.packing2d"]
    sweep = pd.DataFrame(big.rows)
    sweep["S"] = sweep.sparsity.map(sparsity_label)
    sweep["lambda"] = sweep.l1.map(lambda v: f"{v:g}")
    n = big.sweep.n
    m = big.arrays["true_unit"].shape[1]
    best = sweep.groupby(["sparsity", "dict_size"]).mmcs.max().unstack()
    represented = sweep.groupby("sparsity").represented.first()
    # A dictionary has room when it has as many latents as the toy model represents features
    # (n is more than enough: these models represent fewer than n).
    room = [best.loc[s, [d for d in best.columns if d >= represented[s]]].max() for s in best.index]
    mid = [d for d in best.columns if m < d < n]
    # The best lambda of each target's dictionaries of size >= n, and whether it lies inside the
    # range tried (a best at either end says the sweep should go further).
    large = sweep[sweep.dict_size >= n]
    best_l1 = large.loc[large.groupby("sparsity").mmcs.idxmax()].set_index("sparsity").l1
    l1s = sorted(set(large.l1))
    g = lambda v: f"{v:g}"
    facts = {
        "m": m, "n": n,
        # three decimals: MMCS near 1 rounds up to a claim the models do not make
        "best_at_n": f"{best[[d for d in best.columns if d >= n]].max(axis=1).min():.3f}",
        "best_at_m": f"{best[m].max():.3f}" if m in best.columns else "n/a",
        "targets": ", ".join(sparsity_label(s) for s in best.index),
        "represented": ", ".join(str(int(represented[s])) for s in best.index),
        "best_with_room": f"{min(room):.3f}",
        "mid_size": mid[0] if mid else "n/a",
        "mid_best": ", ".join(f"{best.loc[s, mid[0]]:.3f}" for s in best.index) if mid else "n/a",
        "best_l1": ", ".join(g(best_l1[s]) for s in best.index),
        "l1_range": f"{g(l1s[0])}–{g(l1s[-1])}",
        "l1_interior": "yes" if all(l1s[0] < v < l1s[-1] for v in best_l1) else "no",
    }

    # The pentagon: true directions and every dictionary's atoms, with their matches.
    true = small.arrays["true_unit"][0]  # (2, n)
    norms = small.arrays["true_norm"][0]
    arrows, atoms = [], []
    for i in range(true.shape[1]):
        arrows.append({"feature": str(i + 1), "x": round(float(true[0, i] * norms[i]), 4),
                       "y": round(float(true[1, i] * norms[i]), 4)})
    for k, row in enumerate(small.rows):
        D = small.arrays["W_d"][k][:, :row["dict_size"]]
        cos = true.T @ D  # (features, atoms)
        for j in range(D.shape[1]):
            atoms.append({"dict_size": row["dict_size"], "lambda": f"{row['l1']:g}", "atom": j + 1,
                          "x": round(float(D[0, j]), 4), "y": round(float(D[1, j]), 4),
                          "match": str(int(cos[:, j].argmax()) + 1),
                          "cosine": round(float(cos[:, j].max()), 3)})
    arrows, atoms = pd.DataFrame(arrows), pd.DataFrame(atoms)
    small_rows = pd.DataFrame(small.rows)
    small_rows["lambda"] = small_rows.l1.map(lambda v: f"{v:g}")

    s_pick = alt.param(name="target_S", value=sparsity_label(big.sweep.sparsities[1]),
                       bind=alt.binding_select(options=list(sweep.S.unique()),
                                               name="toy model sparsity"))
    mmcs = alt.Chart(sweep).transform_filter(alt.datum.S == s_pick)
    x = alt.X("dict_size:O", title=f"dictionary size (m = {m}, n = {n})")
    lines = mmcs.mark_line(point=True).encode(
        x=x, y=alt.Y("mmcs:Q", title="MMCS with the true features", scale=alt.Scale(domain=[0.4, 1])),
        color=alt.Color("lambda:N", title="L1 coefficient λ", scale=alt.Scale(range=PALETTE[:len(big.sweep.l1)]),
                        legend=alt.Legend(orient="bottom")),
        tooltip=["S:N", "dict_size:O", "lambda:N", "mmcs:Q", "recovered:Q", "l0:Q",
                 "dead_fraction:Q", "fvu:Q"])
    bar = alt.Chart(pd.DataFrame([{"y": 0.9}])).mark_rule(strokeDash=[4, 3], color="gray").encode(y="y:Q")
    left = alt.layer(lines, bar).properties(width=200, height=200, title="feature recovery")

    d_pick = alt.param(name="dict", value=int(small.sweep.dict_sizes[-1]),
                       bind=alt.binding_select(options=list(small.sweep.dict_sizes),
                                               name="pentagon dictionary size"))
    l_pick = alt.param(name="lam", value=f"{small.sweep.l1[-1]:g}",
                       bind=alt.binding_radio(options=[f"{v:g}" for v in small.sweep.l1],
                                              name="pentagon λ"))
    scale = alt.Scale(domain=[-1.3, 1.3])
    feat_color = alt.Color("feature:N", scale=alt.Scale(domain=[str(i + 1) for i in range(len(arrows))],
                                                        range=PALETTE[:len(arrows)]), legend=None)
    true_plane = arrows_from_origin(alt.Chart(arrows), feat_color, "feature:N", scale, width=3
                                    ).properties(width=170, height=170, title="true directions Wᵢ")
    learned = alt.Chart(atoms).transform_filter(
        (alt.datum.dict_size == d_pick) & (alt.datum["lambda"] == l_pick))
    match_color = alt.Color("match:N", scale=alt.Scale(domain=[str(i + 1) for i in range(len(arrows))],
                                                       range=PALETTE[:len(arrows)]),
                            legend=None)
    dict_plane = alt.layer(
        arrows_from_origin(learned.encode(tooltip=["atom:O", "match:N", "cosine:Q"]), match_color,
                           "match:N", scale, width=2),
        alt.Chart(small_rows).transform_filter(
            (alt.datum.dict_size == d_pick) & (alt.datum["lambda"] == l_pick)).transform_calculate(
            t="'MMCS ' + format(datum.mmcs, '.2f') + ', L0 ' + format(datum.l0, '.2f')").mark_text(
            align="left", x=0, y=-8, fontSize=11).encode(text="t:N"),
    ).properties(width=170, height=170, title="learned dictionary")
    chart = alt.hconcat(left, true_plane, dict_plane).add_params(s_pick, d_pick, l_pick) \
        .resolve_scale(color="independent")

    caption = (f"Sparse autoencoders trained on the hidden activations h = Wx of toy models, "
               f"scored by the mean, over the features the toy model represents, of the best "
               f"cosine similarity any dictionary column reaches (MMCS; 1 = every feature "
               f"found). With a dictionary at least as large as the number of features the toy "
               f"model represents ({facts['represented']} at S = {facts['targets']}) and the best "
               f"λ of {facts['l1_range']} ({facts['best_l1']}), the best SAE reaches MMCS "
               f"{facts['best_with_room']} or more at every toy-model sparsity; with only m = {m} "
               f"latents the best is {facts['best_at_m']}. Right: the two-dimensional pentagon (n = 5, m = 2, "
               f"S = 0.99) and a dictionary learned from it; each atom is numbered and coloured "
               f"by the true feature it is closest to.")
    description = ("Line chart of feature recovery against dictionary size for several L1 "
                   "coefficients, beside two planes: the toy model's five true feature "
                   "directions and a sparse autoencoder's learned dictionary, coloured by match.")
    return Figure(ID, "Lab 3.4 — Sparse autoencoders take features back out", caption,
                  description, chart, {"sweep": sweep.drop(columns=["S", "lambda"]),
                                       "pentagon_atoms": atoms, "pentagon_true": arrows},
                  FAMILIES, {"steps": "see [sae_train] in the grid config",
                             "toy models": "lowest-loss seed at each target sparsity"}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "m": "hidden dimensions m of the toy models the autoencoders read",
    "n": "features n of the toy models the autoencoders read",
    "best_at_n": ("worst, over the toy models' sparsities, of the best MMCS (mean max cosine "
                  "with the true features) of any autoencoder with at least n latents", "sweep",
                  "rows with dict_size ≥ n: the largest mmcs per sparsity, then the smallest",
                  ["sae.superposition"]),
    "best_at_m": ("best MMCS of any autoencoder with only m latents, over every sparsity and λ",
                  "sweep", "rows with dict_size = m, the largest mmcs", ["sae.superposition"]),
    "targets": ("sparsities S of the toy models the autoencoders are trained on", "sweep",
                "column sparsity", ["sae.superposition"]),
    "represented": ("features each toy model represents (‖W_i‖ > 0.5), one per sparsity in the "
                    "order of the targets: the features MMCS is averaged over", "sweep",
                    "column represented, one row per sparsity", ["sae.superposition"]),
    "best_with_room": ("worst, over the toy models' sparsities, of the best MMCS of any "
                       "autoencoder with at least as many latents as the toy model represents "
                       "features", "sweep", "rows with dict_size ≥ represented: the largest mmcs "
                       "per sparsity, then the smallest", ["sae.superposition"]),
    "mid_size": ("the smallest dictionary size of the sweep between m and n", "sweep",
                 "column dict_size", ["sae.superposition"]),
    "mid_best": ("best MMCS over λ of the autoencoders of that size, one per sparsity in the order "
                 "of the targets", "sweep", "rows with dict_size = mid_size: the largest mmcs per "
                 "sparsity", ["sae.superposition"]),
    "best_l1": ("the L1 coefficient λ of the best-MMCS autoencoder with at least n latents, one "
                "per sparsity in the order of the targets", "sweep", "rows with dict_size ≥ n: "
                "column l1 of the largest mmcs per sparsity", ["sae.superposition"]),
    "l1_range": ("smallest to largest L1 coefficient λ tried on the autoencoders with at least n "
                 "latents", "sweep", "column l1 of the rows with dict_size ≥ n",
                 ["sae.superposition"]),
    "l1_interior": ("whether every sparsity's best λ lies strictly inside that range (a best at "
                    "either end would say the sweep should go further)", "sweep",
                    "rows with dict_size ≥ n", ["sae.superposition"]),
}
