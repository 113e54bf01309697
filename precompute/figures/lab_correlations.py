"""Lab 3.1: which features each neuron carries, in the paper's privileged-basis model
(h = ReLU(W x), n=10, m=5, I_i = 0.75^i), as feature density falls; beside it the basic model,
whose linear hidden layer has no privileged basis: a random rotation of it loses nothing.

A neuron is monosemantic when one feature holds at least MONOSEMANTIC of its squared weights
(the paper's neuron-level reading of W in "Superposition in a Privileged Basis")."""
import altair as alt
import numpy as np
import pandas as pd
import torch

from precompute import metrics, toy_model
from precompute.figures import PALETTE, Figure, index_slider
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss
from precompute.train import family_seed

ID = "lab-correlations"
FAMILY = "privileged"
BASIC = "superposition"
FAMILIES = [FAMILY, BASIC]
FACTS = ("dense_monosemantic", "dense_mixed_seeds", "dense_mixing_any_loss", "dense_mixed_excess", "half_monosemantic",
         "sparsest_density", "sparse_polysemantic", "all_polysemantic_from", "sparse_represented",
         "seeds", "rotation_sparsity", "rotation_loss", "rotated_loss",
         "basic_features_per_neuron", "rotated_features_per_neuron")
MONOSEMANTIC = 0.9
ROTATION_SPARSITY = 0.9  # the basic model rotated for the contrast
ROTATION_SAMPLES = 1 << 16


def neuron_shares(W):
    """Per neuron (rows of W, m x n): the top feature's share of its squared weights, and how
    many features it spreads over (participation ratio of its squared weights)."""
    w2 = np.asarray(W, dtype=np.float64) ** 2
    total = w2.sum(axis=1)
    live = total > 1e-12
    top = np.where(live, w2.max(axis=1) / np.where(live, total, 1.0), 0.0)
    pr = np.where(live, total ** 2 / np.where(live, (w2 ** 2).sum(axis=1), 1.0), 0.0)
    return top, pr


def monosemantic_count(W):
    top, _ = neuron_shares(W)
    return int((top >= MONOSEMANTIC).sum())


def rotation_contrast(tr):
    """Loss of the basic model's best seed at ROTATION_SPARSITY before and after a random
    orthogonal rotation O of its hidden space, on the same inputs, and its neurons' mean
    participation ratio both ways: the loss cannot tell the two apart, the neurons can."""
    fam = tr.family
    k = next(k for k in lowest_loss(tr) if fam.instances[k].sparsity == ROTATION_SPARSITY)
    inst = fam.instances[k]
    W, b, _ = tr.model(k)
    gen = torch.Generator().manual_seed(family_seed(ID, "rotation"))
    O, _ = torch.linalg.qr(torch.randn(fam.m, fam.m, generator=gen, dtype=torch.float64))
    W = torch.from_numpy(W).double()
    Ws = torch.stack([W, O @ W])
    r = torch.rand(1, inst.n, ROTATION_SAMPLES, generator=gen, dtype=torch.float64)
    x = toy_model.sample_inputs(r, torch.tensor(1 / (1 - inst.sparsity), dtype=torch.float64))
    x = x.expand(2, -1, -1)
    bb = torch.from_numpy(b).double().view(1, -1, 1).expand(2, -1, -1)
    importance = torch.tensor(inst.importance, dtype=torch.float64).view(1, -1, 1)
    losses = toy_model.loss(Ws, bb, x, importance, torch.full((2,), float(inst.n),
                                                              dtype=torch.float64))
    prs = [float(neuron_shares(w.numpy())[1].mean()) for w in Ws]
    return inst.sparsity, [float(v) for v in losses], prs


def build(trained):
    tr = trained[FAMILY]
    fam = tr.family
    weights, summary = [], []
    for idx, k in enumerate(lowest_loss(tr)):
        inst = fam.instances[k]
        W, _, corr = tr.model(k)
        top, pr = neuron_shares(W)
        density = round(1.0 - inst.sparsity, 6)
        label = f"1 − S = {density:g}"
        for j in range(fam.m):
            for i in range(inst.n):
                weights.append({"d_index": idx, "density": density, "label": label,
                                "neuron": j + 1, "feature": i + 1,
                                "weight": round(float(W[j, i]), 4),
                                "r": round(float(corr[j, i]), 4)})
        mono = int((top >= MONOSEMANTIC).sum())
        summary.append({"d_index": idx, "density": density, "label": label,
                        "monosemantic": mono, "polysemantic": fam.m - mono,
                        "features_per_neuron": round(float(pr.mean()), 4),
                        "represented": int((np.linalg.norm(W, axis=0) > REPRESENTED).sum()),
                        "seed": inst.seed, "final_loss": float(tr.arrays["final_loss"][k])})
    weights, summary = pd.DataFrame(weights), pd.DataFrame(summary)

    at = lambda d: summary[np.isclose(summary.density, d)].iloc[0]
    # Dense seeds that mix features in some neuron while their loss is within 2% of the best.
    dense = [k for k in range(len(fam.instances)) if fam.instances[k].sparsity == 0.0]
    losses = tr.arrays["final_loss"][dense]
    excess = losses / losses.min() - 1
    mixing = [e for k, e in zip(dense, excess) if monosemantic_count(tr.model(k)[0]) < fam.m]
    mixed = [e for e in mixing if e < 0.02]
    all_poly = summary[summary.polysemantic == fam.m]
    s_rot, (loss, loss_rot), (pr_basic, pr_rot) = rotation_contrast(trained[BASIC])
    facts = {
        "dense_monosemantic": int(at(1.0).monosemantic),
        "dense_mixed_seeds": len(mixed),
        "dense_mixing_any_loss": len(mixing),
        "dense_mixed_excess": f"{100 * max(mixed, default=0):.1f}%",
        "half_monosemantic": int(at(0.5).monosemantic),
        "sparsest_density": f"{summary.density.min():g}",
        "sparse_polysemantic": int(summary.iloc[-1].polysemantic),
        "all_polysemantic_from": f"{all_poly.density.max():g}" if len(all_poly) else "never",
        "sparse_represented": int(summary.iloc[-1].represented),
        "seeds": fam.seeds,
        "rotation_sparsity": f"{s_rot:g}",
        "rotation_loss": f"{loss:.6f}",
        "rotated_loss": f"{loss_rot:.6f}",
        "basic_features_per_neuron": f"{pr_basic:.1f}",
        "rotated_features_per_neuron": f"{pr_rot:.1f}",
    }

    labels = list(summary.label)
    d = index_slider("d_index", labels, "feature density ")
    base = alt.Chart(weights).transform_filter(alt.datum.d_index == d)
    heat = lambda field, title, legend: base.mark_rect().encode(
        x=alt.X("feature:O", title="feature i (importance 0.75^i, most important first)"),
        y=alt.Y("neuron:O", title="neuron"),
        color=alt.Color(f"{field}:Q", title=legend, scale=alt.Scale(scheme="blueorange",
                                                                     domain=[-1.5, 1.5]
                                                                     if field == "weight"
                                                                     else [-1, 1])),
        tooltip=["label:N", "neuron:O", "feature:O", "weight:Q", "r:Q"],
    ).properties(width=300, height=130, title=title)
    readout = base.transform_filter("datum.neuron == 1 && datum.feature == 1").mark_text(
        align="left", x=0, y=-8, fontSize=13, fontWeight="bold").encode(text="label:N")
    x = alt.X("density:Q", title="feature density 1 − S (sparser to the right)",
              scale=alt.Scale(type="log", reverse=True, nice=False),
              # a 1-2-5 ladder: Vega's default log ticks (..., 0.5, 0.4, 0.3) collide at this width
              axis=alt.Axis(values=[1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01], format="~g"))
    counts = summary.melt(id_vars=["d_index", "density", "label"],
                          value_vars=["monosemantic", "polysemantic"], var_name="neurons",
                          value_name="count")
    lines = alt.Chart(counts).mark_line(point=True).encode(
        x=x, y=alt.Y("count:Q", title="neurons (of 5)", scale=alt.Scale(domain=[0, fam.m])),
        color=alt.Color("neurons:N", scale=alt.Scale(domain=["monosemantic", "polysemantic"],
                                                     range=[PALETTE[0], PALETTE[5]]),
                        legend=alt.Legend(orient="bottom", title=None)),
        tooltip=["label:N", "neurons:N", "count:Q"])
    cursor = alt.Chart(summary).transform_filter(alt.datum.d_index == d).mark_rule(
        color="gray", strokeDash=[4, 3]).encode(x=x)
    trend = alt.layer(lines, cursor).properties(width=300, height=170,
                                                title="monosemantic neurons as density falls")
    chart = alt.vconcat(alt.layer(heat("weight", "weights W (neuron × feature)", "weight"),
                                  readout),
                        heat("r", "correlation of each neuron with each feature", "Pearson r"),
                        trend).add_params(d)

    caption = (
        f"The paper's model with a ReLU on its hidden layer (n = 10 features, m = 5 neurons, "
        f"importance 0.75^i), best of {fam.seeds} trained seeds at each feature density. "
        f"Drag the slider to move through density. Top: each neuron's weights and its "
        f"correlation with each feature on fresh inputs. Bottom: a neuron counts as "
        f"monosemantic when one feature holds at least {MONOSEMANTIC:.0%} of its squared "
        f"weights. At 1 − S = 0.5 {facts['half_monosemantic']} of 5 neurons are monosemantic; "
        f"at 1 − S = {facts['sparsest_density']} {facts['sparse_polysemantic']} are "
        f"polysemantic. For contrast, the basic model (linear hidden layer, n = 20, m = 5, "
        f"S = {facts['rotation_sparsity']}) has loss {facts['rotation_loss']}, and "
        f"{facts['rotated_loss']} after a random rotation of its hidden space, while its "
        f"neurons go from about {facts['basic_features_per_neuron']} to "
        f"{facts['rotated_features_per_neuron']} features each: there, which neuron carries "
        f"which feature is arbitrary.")
    description = (f"Two heatmaps of a 5-neuron by 10-feature model with a feature-density "
                   f"slider, above a line chart of monosemantic and polysemantic neuron counts "
                   f"against density: {facts['half_monosemantic']} monosemantic neurons at "
                   f"density 0.5, {facts['sparse_polysemantic']} polysemantic at density "
                   f"{facts['sparsest_density']}.")
    return Figure(ID, "Lab 3.1 — Neurons in a privileged basis as features get sparser", caption,
                  description, chart, {"weights": weights, "summary": summary}, FAMILIES,
                  {"selection": "lowest paired-evaluation loss of the seeds at each density",
                   "monosemantic_threshold": MONOSEMANTIC,
                   "rotation": f"basic model at S = {s_rot:g}, one random orthogonal matrix"},
                  facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "dense_monosemantic": ("monosemantic neurons (top feature ≥ 90% of the squared weights), of "
                           "five, in the lowest-loss dense model (1 − S = 1)", "summary",
                           "the row density = 1, column monosemantic", ["privileged"]),
    "dense_mixed_seeds": ("dense seeds that mix features in some neuron with a loss within 2% of "
                          "the best dense seed", None, None, ["privileged"]),
    "dense_mixing_any_loss": ("dense seeds that mix features in some neuron, whatever their "
                              "loss", None, None, ["privileged"]),
    "dense_mixed_excess": ("largest loss excess over the best dense seed among the mixing seeds "
                           "within 2% of it", None, None, ["privileged"]),
    "half_monosemantic": ("monosemantic neurons, of five, in the lowest-loss model at "
                          "1 − S = 0.5", "summary", "the row density = 0.5, column monosemantic",
                          ["privileged"]),
    "sparsest_density": ("the lowest feature density 1 − S of the sweep", "summary",
                         "column density, smallest value", ["privileged"]),
    "sparse_polysemantic": ("polysemantic neurons, of five, in the lowest-loss model at the "
                            "sparsest density", "summary", "the last row, column polysemantic",
                            ["privileged"]),
    "all_polysemantic_from": ("highest density at which all five neurons are polysemantic",
                              "summary", "rows with polysemantic = 5, the largest density",
                              ["privileged"]),
    "sparse_represented": ("features with ‖W_i‖ > 0.5 in the lowest-loss model at the sparsest "
                           "density", "summary", "the last row, column represented",
                           ["privileged"]),
    "seeds": "seeds trained at each density; the lowest-loss one is drawn",
    "rotation_sparsity": ("sparsity S of the basic (non-privileged) model whose hidden space "
                          "is rotated at random", None, None, ["superposition"]),
    "rotation_loss": ("that model's loss on fresh inputs before the rotation", None, None,
                      ["superposition"]),
    "rotated_loss": ("the same model's loss on the same inputs after the rotation", None, None,
                     ["superposition"]),
    "basic_features_per_neuron": ("mean participation ratio (features per neuron) of the basic "
                                  "model's hidden units before the rotation", None, None,
                                  ["superposition"]),
    "rotated_features_per_neuron": ("mean participation ratio of the hidden units after the "
                                    "rotation", None, None, ["superposition"]),
}
