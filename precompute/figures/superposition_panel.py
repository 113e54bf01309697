"""The paper's key panel for n=20, m=5: W^T W and the feature norms ||W_i||, coloured by how much
each feature shares its dimensions with others, across sparsity."""
import altair as alt
import numpy as np
import pandas as pd
import torch

from precompute import metrics, toy_model
from precompute.figures import Figure, index_slider, sparsity_label
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss
from precompute.train import family_seed

ID = "superposition-panel"
FAMILY = "superposition"
LINEAR = "linear"
FAMILIES = [FAMILY, LINEAR]
# the names build() puts in facts, for --check
FACTS = ('onset_sparsity', 'onset_before', 'linear_represented', 'relu_dense_represented',
         'relu_sparse_represented', 'sparse_seed_represented', 'sparse_seed_strong',
         'sparse_seed_excess', 'sparse_seed_gap_se', 'sparsest', 'seeds', 'eval_samples',
         'noise_max', 'tie_sparsities', 'tie_count', 'sparse_seed_partial',
         'sparse_partial_norms', 'sparse_best_longest_partial', 'sparse_others_crossing',
         'bias_cost')
STRONG = 0.7  # a column this long is stored in full, whatever the REPRESENTED threshold says
PARTIAL = 0.1  # a shorter column (and not STRONG) is stored in part; below it, dropped

# fresh inputs per grid point to measure the seeds' paired noise: sparse points have heavy
# tails (two features active at once), and 2^14 inputs put the standard error at S = 0.999
# anywhere from 0.4% to 0.9% of the loss; 2^17 and more agree on 0.6%
NOISE_SAMPLES = 1 << 17
TIE = 3.0  # standard errors: seeds closer than this are not told apart by the evaluation


def paired_noise(tr, a, others, samples=NOISE_SAMPLES):
    """Model a's loss against each of `others` (same grid point) on one fresh draw, scored the
    way metrics.evaluate scores them: the all-zero input exactly, the rest given that some
    feature is active. Returns (loss differences L_other - L_a, their standard error at the
    evaluation's own sample count), from the per-input spread of the paired differences."""
    fam, inst = tr.family, tr.family.instances[a]
    n, evals = inst.n, int(tr.arrays["eval_samples"].item())
    models = [tr.model(k) for k in [a, *others]]
    W = torch.tensor(np.stack([m[0] for m in models]))
    b = torch.tensor(np.stack([m[1] for m in models])).unsqueeze(2)
    gen = torch.Generator().manual_seed(family_seed(fam.name, f"noise/{a}"))
    inv_p = torch.full((1, n, 1), 1.0 / (1.0 - inst.sparsity))
    r, u = torch.rand(1, n, samples, generator=gen), torch.rand(1, 1, samples, generator=gen)
    x, any_active = toy_model.sample_inputs_given_any(r, u, inv_p, torch.tensor([float(n)]))
    relu, hidden_relu = fam.activation == "relu", fam.hidden_activation == "relu"
    importance = torch.tensor(inst.importance).view(1, n, 1)
    per_input = lambda x: (importance * (x - toy_model.reconstruct(
        W, b, x.expand(len(W), -1, -1), relu, hidden_relu)) ** 2).sum(1).double() / n
    p = float(any_active)
    zero = per_input(torch.zeros(1, n, 1))[:, 0]
    scored = per_input(x)
    d = scored[1:] - scored[:1]  # (others, samples)
    gap = (1 - p) * (zero[1:] - zero[0]) + p * d.mean(1)
    return gap.numpy(), (p * d.std(1) / evals ** 0.5).numpy()


def seed_noise(tr):
    """{grid point: (loss gap, its standard error)} of the lowest-loss seed against the
    runner-up, both relative to the best loss, where the two store different features (where
    they store the same ones, which of them wins changes nothing the figure shows)."""
    fam = tr.family
    losses = tr.arrays["final_loss"].reshape(fam.seeds, fam.per_seed)
    live = lambda k: tuple(np.flatnonzero(np.linalg.norm(tr.model(k)[0], axis=0) > REPRESENTED))
    out = {}
    for p in range(fam.per_seed):
        best, second = (np.argsort(losses[:, p])[:2] * fam.per_seed + p)
        if live(best) != live(second):
            se = paired_noise(tr, best, [second])[1][0]
            out[p] = (float(losses.flat[second] / losses.flat[best] - 1),
                      float(se / losses.flat[best]))
    return out


def bias_cost(W, b, points=4096):
    """Median over the represented features of what one loses when it is active alone, as a
    share of its worth (the loss of dropping it): E[(x - ReLU(||W_i||^2 x + b_i))^2] / E[x^2]
    for x uniform on [0, 1] (midpoint rule). Nothing else is active, so this is the price of
    the feature's own bias, after the column's length has made up what it can."""
    x = (np.arange(points) + 0.5) / points
    sq = (np.asarray(W, np.float64) ** 2).sum(0)
    rep = np.sqrt(sq) > REPRESENTED
    err = ((x[:, None] - np.maximum(sq[rep] * x[:, None] + b[rep], 0.0)) ** 2).mean(0)
    return float(np.median(err / np.mean(x ** 2)))


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
    # every seed at the sparsest point, where the seeds disagree most: how many columns pass
    # the threshold, how many are stored in full, and how much more than the best seed it loses
    last = [k for k, i in enumerate(fam.instances) if i.sparsity == fam.instances[-1].sparsity]
    norms = [metrics.geometry(tr.model(k)[0])["norm"] for k in last]
    sparsest = [int((nr > REPRESENTED).sum()) for nr in norms]
    strong = sorted({int((nr > STRONG).sum()) for nr in norms})
    partial = [nr[(nr > PARTIAL) & (nr <= STRONG)] for nr in norms]
    best_last = lowest_loss(tr)[-1]
    others = [k for k in last if k != best_last]
    crossing = sorted(int((partial[last.index(k)] > REPRESENTED).sum()) for k in others)
    longest = float(partial[last.index(best_last)].max(initial=0.0))
    excess = [tr.arrays["final_loss"][k] / tr.arrays["final_loss"][best_last] - 1 for k in others]
    se = paired_noise(tr, best_last, others)[1] / tr.arrays["final_loss"][best_last]
    # the best seed against the runner-up at every sparsity: the evaluation's noise, and the
    # sparsities where it cannot tell two different arrangements apart
    noise = seed_noise(tr)
    ties = [labels[p] for p, (gap, se) in noise.items() if gap < TIE * se]
    facts = {"onset_sparsity": labels[over[0]] if over else "never",
             "onset_before": labels[over[0] - 1] if over and over[0] > 0 else "none",
             "linear_represented": " or ".join(map(str, lin_rep)),
             "relu_dense_represented": int(relu_rep.iloc[0]),
             "relu_sparse_represented": int(relu_rep.iloc[-1]),
             "sparse_seed_represented": f"{min(sparsest)} to {max(sparsest)}",
             "sparse_seed_strong": " to ".join(map(str, sorted({strong[0], strong[-1]}))),
             "sparse_seed_partial": " to ".join(dict.fromkeys(
                 str(f(map(len, partial))) for f in (min, max))),
             "sparse_partial_norms": f"{np.concatenate(partial).min():.2f} to "
                                     f"{np.concatenate(partial).max():.2f}",
             "sparse_best_longest_partial": f"{longest:.2f}",
             "sparse_others_crossing": " and ".join(map(str, crossing)),
             "bias_cost": f"{100 * bias_cost(*tr.model(best_last)[:2]):.1f}%",
             "sparse_seed_excess": f"{100 * min(excess):.0f}% to {100 * max(excess):.0f}%",
             "sparse_seed_gap_se": f"{min(np.array(excess) / se):.0f}",
             "noise_max": f"{100 * max(se for _, se in noise.values()):.1f}%",
             "tie_sparsities": ", ".join(ties) or "none",
             "tie_count": len(ties),
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
    "sparse_seed_strong": ("columns longer than 0.7 (stored in full) in each seed at the "
                           "sparsest sparsity; one number when every seed has as many", None,
                           None, ["superposition"]),
    "sparse_seed_partial": ("fewest to most partial columns (norm between 0.1 and 0.7) in any "
                            "seed at the sparsest sparsity", None, None, ["superposition"]),
    "sparse_partial_norms": ("shortest to longest of those partial columns over all the seeds "
                             "at the sparsest sparsity", None, None, ["superposition"]),
    "sparse_best_longest_partial": ("the longest partial column of the lowest-loss seed at the "
                                    "sparsest sparsity", "norms", "rows of the last s_index "
                                    "with norm at most 0.7, the largest", ["superposition"]),
    "sparse_others_crossing": ("partial columns longer than 0.5 (so counted as represented) in "
                               "each of the other seeds at the sparsest sparsity", None, None,
                               ["superposition"]),
    "bias_cost": ("median over the represented features of the lowest-loss model at the "
                  "sparsest sparsity of the loss a feature has when active alone, as a share of "
                  "the loss of dropping it: E[(x − ReLU(‖W_i‖² x + b_i))²] / E[x²], x uniform on "
                  "[0, 1]", None, None, ["superposition"]),
    "sparse_seed_excess": ("how much higher the other seeds' losses are than the best seed's at "
                           "the sparsest sparsity (final_loss, paired scoring)", None, None,
                           ["superposition"]),
    "sparse_seed_gap_se": ("the smallest of those loss gaps in standard errors of the paired "
                           "scoring (measured on 2^17 fresh inputs, scaled to eval_samples)",
                           None, None, ["superposition"]),
    "noise_max": ("largest standard error of the paired loss difference between the best and "
                  "second-best seed, relative to the best loss, over the sparsities where the two "
                  "store different features", None, None, ["superposition"]),
    "tie_sparsities": ("sparsities where the best two seeds store different features and their "
                       "loss gap is under three standard errors of the paired scoring", None, None,
                       ["superposition"]),
    "tie_count": ("how many sparsities tie_sparsities lists", None, None, ["superposition"]),
    "sparsest": ("the sparsest S of the sweep", "norms", "column sparsity, last value",
                 ["superposition"]),
    "seeds": "seeds trained at each sparsity; the lowest-loss one is drawn",
    "eval_samples": ("fresh inputs every seed's loss is scored on, to pick the lowest-loss seed "
                     "([train] eval_samples in the grid config)", None, None, ["superposition"]),
}
