"""Adversarial vulnerability against sparsity (the paper's "Relationship to Adversarial
Robustness"), computed from the trained n=20, m=5 ReLU and linear models without training.

The paper's attack: for each feature i the optimal L2 attack on it is the direction of the row
(WᵀW)_i, delta_i = lambda (WᵀW)_i / ||(WᵀW)_i||, with lambda a tenth of the average input norm;
each input gets whichever of these n attacks raises its loss most. We score that on the model's
own input distribution, through the ReLU (its active set decides what the attack can move), as
the loss increase per lambda^2 in units of I_1/n: the increase when the attack only shifts the
most important feature's output by lambda, which is what it does to a model without
superposition (the linear model measures 1.00). Features per dimension, ||W||_F^2 / m, is the
paper's measure of superposition.

Sparse inputs are mostly all zero, where the ReLU's threshold -b swallows a push that a model
without superposition would feel in full, and they shrink the budget with them. So each model is
also scored on its non-zero inputs alone, budget and all: what superposition does to the inputs
that carry a feature, apart from how often there is none."""
import hashlib
import json
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd

from precompute import cache, metrics
from precompute.figures import PALETTE, Figure, sparsity_label
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss
from precompute.train import family_seed

ID = "adversarial"
FAMILY = "superposition"
LINEAR = "linear"
FAMILIES = [FAMILY, LINEAR]
# the names build() puts in facts, for --check
FACTS = ('budget', 'samples', 'dense', 'peak', 'peak_sparsity', 'peak_fpd', 'sparsest',
         'sparsest_vulnerability', 'sparsest_fpd', 'sparsest_budget', 'sparsest_threshold',
         'linear_range', 'over_linear', 'rank_all', 'rank_unmasked', 'sparsest_zero_share',
         'sparsest_zero_gain', 'sparsest_nonzero', 'sparsest_nonzero_budget', 'plateau_from',
         'plateau_range', 'plateau_fpd', 'rank_nonzero', 'rank_plateau')
BUDGET = 0.1  # the paper: "a max L2 attack norm of 0.1 of the average input norm"
SAMPLES = 16384
CHUNK = 4096


def inputs(sparsity, n, samples=SAMPLES):
    """The paper's inputs at one sparsity, the same draws for every model scored at it."""
    rng = np.random.default_rng(family_seed(ID, f"{n}/{sparsity!r}"))
    r = rng.random((samples, n))
    p = 1.0 - sparsity
    return np.where(r < p, r / p, 0.0)


def vulnerability(W, b, importance, x, relu=True, lam=None):
    """(lambda, clean loss, attacked loss, vulnerability) of one model (W m x n, b n) on inputs x
    (samples x n): the worst of the n analytic attacks per input, as in the module docstring.
    The budget lam is BUDGET times the inputs' mean norm unless given."""
    G = W.T.astype(np.float64) @ W
    rows = np.linalg.norm(G, axis=1)
    attacks = G[rows > 1e-12] / rows[rows > 1e-12, None]  # unit directions (WᵀW)_i / ||(WᵀW)_i||
    if lam is None:
        lam = BUDGET * float(np.linalg.norm(x, axis=1).mean())
    act = (lambda z: np.maximum(z, 0.0)) if relu else (lambda z: z)
    I, n = np.asarray(importance, np.float64), x.shape[1]
    shift = lam * attacks @ G  # what each attack adds to the pre-activations
    # Sparse inputs are mostly all zero: score that input once, weighted by how often it occurs.
    zero = ~x.any(1)
    x = np.vstack([x[~zero], np.zeros((1, n))]) if zero.any() else x
    weight = np.ones(len(x))
    weight[-1] = zero.sum() if zero.any() else 1.0
    clean = attacked = 0.0
    for lo in range(0, len(x), CHUNK):
        xc, wc = x[lo:lo + CHUNK], weight[lo:lo + CHUNK]
        z = xc @ G + b
        clean += float(wc @ (I * (xc - act(z)) ** 2).sum(1))
        out = act(z[:, None, :] + shift[None])  # samples x attacks x n
        attacked += float(wc @ (I * (xc[:, None, :] - out) ** 2).sum(2).max(1))
    clean, attacked = clean / (weight.sum() * n), attacked / (weight.sum() * n)
    return lam, clean, attacked, (attacked - clean) / (lam ** 2 * I.max() / n)


def threshold(W, b):
    """The ReLU's threshold -b_i, the median over the represented features (all, if none is)."""
    rep = np.linalg.norm(W, axis=0) > REPRESENTED
    return float(np.median(-b[rep] if rep.any() else -b))


def share(v):
    """A ratio to 1 as a percentage, "under 0.1%" below that, so a small one never reads 0.00."""
    return "under 0.1%" if abs(v) < 1e-3 else f"{100 * v:.1f}%"


def rank_correlation(a, b):
    """Spearman's rho (ties get their mean rank)."""
    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


MODELS = ((FAMILY, True, "ReLU model"), (LINEAR, False, "linear model"))


def scored(trained):
    """vulnerability() of each family's lowest-loss models, in MODELS order, on all inputs and on
    the non-zero ones: (models, 8). Scoring 20 models on 16,384 inputs and n attacks each takes
    about 1.9 s a pass on two cores (3.8 s for both), so the scores are cached beside the models,
    keyed on both families' entries and this file."""
    key = hashlib.sha256(json.dumps({
        "models": [trained[name].key for name, _, _ in MODELS], "numpy": np.__version__,
        "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}).encode()).hexdigest()

    def score():
        out = []
        for name, relu, _ in MODELS:
            tr = trained[name]
            for k in lowest_loss(tr):
                inst = tr.family.instances[k]
                W, b, _ = tr.model(k)
                x = inputs(inst.sparsity, inst.n)
                out.append(vulnerability(W, b, inst.importance, x, relu)
                           + vulnerability(W, b, inst.importance, x[x.any(1)], relu))
        return {"scores": np.array(out)}
    path = Path(trained[FAMILY].cache_dir) / f"{ID}-{key[:16]}.npz"
    return iter(cache.made(path, key, score)["scores"].tolist())


def build(trained):
    rows, scores = [], scored(trained)
    for name, relu, label in MODELS:
        tr = trained[name]
        for k in lowest_loss(tr):
            inst = tr.family.instances[k]
            W, b, _ = tr.model(k)
            lam, clean, attacked, vul, lam_nz, clean_nz, attacked_nz, vul_nz = next(scores)
            rows.append({"model": label, "sparsity": inst.sparsity,
                         "S": sparsity_label(inst.sparsity),
                         "inv_density": round(1.0 / (1.0 - inst.sparsity), 4),
                         "vulnerability": round(vul, 4),
                         "vulnerability_nonzero": round(vul_nz, 4),
                         "features_per_dimension": round(1.0 / metrics.geometry(W)["dims_per_feature"], 4),
                         "attack_norm": round(lam, 6),
                         "attack_norm_nonzero": round(lam_nz, 6),
                         "zero_share": float((~inputs(inst.sparsity, inst.n).any(1)).mean()),
                         # the worst push's loss increase on the all-zero input, same units
                         "zero_input_gain": vulnerability(W, b, inst.importance,
                                                          np.zeros((1, inst.n)), relu, lam)[3],
                         "threshold": round(threshold(W, b), 4),
                         "clean_loss": clean,
                         "attacked_loss": attacked, "clean_loss_nonzero": clean_nz,
                         "attacked_loss_nonzero": attacked_nz, "seed": inst.seed})
    table = pd.DataFrame(rows)
    relu = table[table.model == "ReLU model"].reset_index(drop=True)
    lin = table[table.model == "linear model"].set_index("sparsity")
    peak = relu.loc[relu.vulnerability.idxmax()]
    # Past the peak most inputs are all zero, where the push (a tenth of a shrinking average
    # input) stays under the ReLU's threshold -b and does nothing: rank the two measures up to
    # the peak as well as over the whole sweep. On the non-zero inputs alone vulnerability levels
    # off instead of falling: the plateau is where it stays within 10% of its largest value to
    # the end of the sweep.
    upto = relu[relu.sparsity <= peak.sparsity]
    nz = relu.vulnerability_nonzero
    plateau = relu[(nz >= 0.9 * nz.max())[::-1].cummin()[::-1]]
    if plateau.empty:  # a short sweep (the tests' quick grid) can end below 90% of the top
        plateau = relu.iloc[[-1]]
    last = relu.iloc[-1]
    shared = [s for s in lin.index if s in set(relu.sparsity) and s > 0]
    over = [float(relu.set_index("sparsity").vulnerability[s] / lin.vulnerability[s]) for s in shared]
    facts = {"budget": f"{BUDGET:.0%}", "samples": f"{SAMPLES:,}",
             "dense": f"{relu.vulnerability.iloc[0]:.2f}",
             "peak": f"{peak.vulnerability:.2f}", "peak_sparsity": peak.S,
             "peak_fpd": f"{peak.features_per_dimension:.2f}",
             "sparsest": relu.S.iloc[-1], "sparsest_vulnerability": f"{relu.vulnerability.iloc[-1]:.2f}",
             "sparsest_fpd": f"{relu.features_per_dimension.iloc[-1]:.2f}",
             "sparsest_budget": f"{relu.attack_norm.iloc[-1]:.4f}",
             "sparsest_threshold": f"{relu.threshold.iloc[-1]:.2f}",
             "linear_range": "–".join(dict.fromkeys(f"{v:.2f}" for v in (lin.vulnerability.min(),
                                                                           lin.vulnerability.max()))),
             "over_linear": ", ".join(f"{v:.1f}× at S = {sparsity_label(s)}"
                                      for s, v in zip(shared, over)),
             "rank_all": f"{rank_correlation(relu.vulnerability, relu.features_per_dimension):.2f}",
             "rank_unmasked": f"{rank_correlation(upto.vulnerability, upto.features_per_dimension):.2f}",
             "sparsest_zero_share": f"{last.zero_share:.0%}",
             "sparsest_zero_gain": share(last.zero_input_gain),
             "rank_nonzero": f"{rank_correlation(relu.vulnerability_nonzero, relu.features_per_dimension):.2f}",
             "rank_plateau": f"{rank_correlation(plateau.vulnerability_nonzero, plateau.features_per_dimension):.2f}",
             "sparsest_nonzero": f"{last.vulnerability_nonzero:.2f}",
             "sparsest_nonzero_budget": f"{last.attack_norm_nonzero:.3f}",
             "plateau_from": plateau.S.iloc[0],
             "plateau_range": "–".join(f"{v:.2f}" for v in (plateau.vulnerability_nonzero.min(),
                                                            plateau.vulnerability_nonzero.max())),
             "plateau_fpd": "–".join(f"{v:.2f}" for v in (plateau.features_per_dimension.min(),
                                                          plateau.features_per_dimension.max()))}

    long = pd.concat([
        relu.assign(measure="vulnerability (ReLU model)", value=relu.vulnerability),
        relu.assign(measure="vulnerability on non-zero inputs (ReLU model)",
                    value=relu.vulnerability_nonzero, attack_norm=relu.attack_norm_nonzero),
        relu.assign(measure="features per dimension (ReLU model)", value=relu.features_per_dimension),
        lin.reset_index().assign(measure="vulnerability (linear model)", value=lin.vulnerability.values),
    ])[["measure", "S", "inv_density", "value", "attack_norm"]]
    x = alt.X("inv_density:Q", scale=alt.Scale(type="log"), title="1 / (1 − S)")
    colour = alt.Color("measure:N", title=None, legend=alt.Legend(orient="top", columns=1, labelLimit=320),
                       scale=alt.Scale(domain=["vulnerability (ReLU model)",
                                               "vulnerability on non-zero inputs (ReLU model)",
                                               "features per dimension (ReLU model)",
                                               "vulnerability (linear model)"],
                                       range=[PALETTE[5], PALETTE[3], PALETTE[0], PALETTE[7]]))
    tooltip = ["measure:N", "S:N", alt.Tooltip("value:Q", format=".2f"), "attack_norm:Q"]
    base = alt.Chart(long).encode(x=x, y=alt.Y("value:Q", title="× the value without superposition"),
                                  color=colour, tooltip=tooltip)
    lines = base.transform_filter(alt.datum.measure != "vulnerability (linear model)").mark_line(
        point=True, strokeWidth=2.5)
    dots = base.transform_filter(alt.datum.measure == "vulnerability (linear model)").mark_point(
        size=90, shape="diamond", filled=True)
    one = alt.Chart(pd.DataFrame({"y": [1.0]})).mark_rule(color="gray", strokeDash=[4, 3]).encode(y="y:Q")
    chart = alt.layer(one, lines, dots).properties(width=500, height=300)

    caption = (f"The paper's adversarial attack on the lowest-loss n = 20, m = 5 models (importance "
               f"0.7^i): for each feature, a push of size λ = {facts['budget']} of the average input "
               f"norm along its row of WᵀW; each input gets the push that raises its loss most "
               f"({facts['samples']} inputs per sparsity). Vulnerability is the loss increase per λ², "
               f"in units of what the same push does to a model without superposition; the linear "
               f"model measures {facts['linear_range']}. The ReLU model's vulnerability rises with "
               f"its features per dimension to {facts['peak']} at S = {facts['peak_sparsity']} "
               f"(rank correlation {facts['rank_unmasked']} up to there, {facts['rank_all']} over the "
               f"whole sweep), then falls to "
               f"{facts['sparsest_vulnerability']} at S = {facts['sparsest']}, where "
               f"{facts['sparsest_zero_share']} of inputs are all zero and the push raises their "
               f"loss by {facts['sparsest_zero_gain']} of what it does to a model without "
               f"superposition. Scored on the non-zero inputs alone, budget included, it levels "
               f"off instead: {facts['plateau_range']} from S = "
               f"{facts['plateau_from']} on, while features per dimension go "
               f"{facts['plateau_fpd']}.")
    description = ("Line chart against inverse feature density on a log axis: the ReLU model's "
                   "adversarial vulnerability on all inputs and on the non-zero ones, and its "
                   "features per dimension, with the linear model's vulnerability as diamonds "
                   "and a dashed line at 1.")
    return Figure(ID, "Superposition and adversarial vulnerability", caption, description, chart,
                  {"vulnerability": table}, FAMILIES,
                  {"attack": "lambda (WᵀW)_i / ||(WᵀW)_i||, worst i per input",
                   "budget": f"lambda = {BUDGET} x mean ||x||_2", "samples": SAMPLES,
                   "vulnerability": "(attacked loss - clean loss) / (lambda^2 max_i I_i / n)",
                   "non-zero inputs": "the same score, lambda included, on the inputs with some "
                                      "feature present",
                   "selection": "lowest final loss of the seeds at each sparsity"}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "budget": "the attack's L2 budget, as a share of the average input's norm (the paper's)",
    "samples": "inputs each model is scored on, at each sparsity",
    "dense": ("vulnerability (loss increase per λ², in units of I_1/n) of the densest ReLU "
              "model", "vulnerability", "the ReLU model's first row", ["superposition"]),
    "peak": ("highest vulnerability of any ReLU model in the sweep", "vulnerability",
             "ReLU model rows, the largest vulnerability", ["superposition"]),
    "peak_sparsity": ("sparsity S of that most vulnerable ReLU model", "vulnerability",
                      "ReLU model rows, the largest vulnerability", ["superposition"]),
    "peak_fpd": ("features per dimension ‖W‖²_F / m of that model", "vulnerability",
                 "ReLU model rows, the largest vulnerability", ["superposition"]),
    "sparsest": ("the sparsest S of the sweep", "vulnerability", "the ReLU model's last row",
                 ["superposition"]),
    "sparsest_vulnerability": ("vulnerability of the sparsest ReLU model", "vulnerability",
                               "the ReLU model's last row", ["superposition"]),
    "sparsest_fpd": ("features per dimension of the sparsest ReLU model", "vulnerability",
                     "the ReLU model's last row", ["superposition"]),
    "sparsest_budget": ("length λ of the attack at the sparsest S (a tenth of the average "
                        "input's norm)", "vulnerability", "the ReLU model's last row, "
                        "column attack_norm", ["superposition"]),
    "sparsest_threshold": ("median ReLU threshold −b_i of the represented features of the "
                           "sparsest ReLU model", "vulnerability", "the ReLU model's last row, "
                           "column threshold", ["superposition"]),
    "linear_range": ("lowest to highest vulnerability of the linear models", "vulnerability",
                     "rows with model = linear model", ["linear"]),
    "over_linear": ("the ReLU model's vulnerability over the linear model's at each sparsity "
                    "both were trained at (S > 0)", "vulnerability", "rows of the same S"),
    "rank_all": ("rank correlation (Spearman's ρ) of vulnerability with features per "
                 "dimension over the whole sweep: every ReLU model, densest to sparsest",
                 "vulnerability", "ReLU model rows", ["superposition"]),
    "rank_unmasked": ("rank correlation (Spearman's ρ) of vulnerability with features per "
                      "dimension over the ReLU models from the densest up to the peak, included",
                      "vulnerability", "ReLU model rows up to the peak's S", ["superposition"]),
    "sparsest_zero_share": ("share of the scoring inputs at the sparsest S that are all zero",
                            "vulnerability", "the ReLU model's last row, column zero_share",
                            ["superposition"]),
    "sparsest_zero_gain": ("loss increase the worst push (of the all-input budget λ) causes on "
                           "the all-zero input of the sparsest ReLU model, in the units of "
                           "vulnerability", "vulnerability", "the ReLU model's last row, column "
                           "zero_input_gain", ["superposition"]),
    "rank_nonzero": ("rank correlation (Spearman's ρ) of the vulnerability on non-zero inputs "
                     "with features per dimension over the whole sweep", "vulnerability",
                     "ReLU model rows, columns vulnerability_nonzero and "
                     "features_per_dimension", ["superposition"]),
    "rank_plateau": ("the same rank correlation over the plateau's rows alone (from plateau_from "
                     "to the end of the sweep)", "vulnerability", "ReLU model rows from "
                     "plateau_from on", ["superposition"]),
    "sparsest_nonzero": ("vulnerability of the sparsest ReLU model scored on its non-zero inputs "
                         "alone, budget taken from those inputs", "vulnerability",
                         "the ReLU model's last row, column vulnerability_nonzero",
                         ["superposition"]),
    "sparsest_nonzero_budget": ("length λ of that attack: a tenth of the non-zero inputs' "
                                "average norm at the sparsest S", "vulnerability",
                                "the ReLU model's last row, column attack_norm_nonzero",
                                ["superposition"]),
    "plateau_from": ("sparsity S from which on, to the end of the sweep, the ReLU model's "
                     "vulnerability on non-zero inputs stays within 10% of its largest value",
                     "vulnerability", "ReLU model rows with vulnerability_nonzero ≥ 0.9 × its "
                     "maximum, to the last row", ["superposition"]),
    "plateau_range": ("lowest to highest vulnerability on non-zero inputs over that plateau",
                      "vulnerability", "those rows, column vulnerability_nonzero",
                      ["superposition"]),
    "plateau_fpd": ("lowest to highest features per dimension over that plateau",
                    "vulnerability", "those rows, column features_per_dimension",
                    ["superposition"]),
}
