"""The figures: built from the trained models, valid standalone Vega-Lite, interactive where the
issue asks, and quoting numbers that agree with the models and with the mathematics."""
import json

import numpy as np
import pytest
import vl_convert

from precompute import figures, metrics
from precompute.figures import adversarial, concentration, learning_dynamics
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss
from render.figure_export import canonical_spec

STABLE_IDS = ["lab-correlations", "lab-interference", "lab-packing", "superposition-panel",
              "phase-diagram", "dimensionality", "concentration", "sae-recovery",
              "adversarial", "learning-dynamics", "correlated-features", "computation"]


@pytest.fixture(scope="module")
def built(trained):
    return {f.id: f for f in figures.build_all(trained)}


def test_ids_are_the_published_ones():
    assert figures.ids() == STABLE_IDS


def test_every_figure_is_complete_and_valid_vega_lite(built):
    for fig in built.values():
        assert fig.title and fig.caption and fig.description and fig.tables
        spec = canonical_spec(fig)
        text = json.dumps(spec)
        assert '"url"' not in text, "data must be inline: file:// pages cannot fetch"
        assert "view_" not in text, "view names must not depend on build order"
        vega = vl_convert.vegalite_to_vega(spec)  # compiles, or raises
        assert vega["marks"]
        assert all(len(df) for df in fig.tables.values())


@pytest.mark.parametrize("fid, controls", [
    ("lab-correlations", {"d_index"}), ("lab-interference", {"angle", "bias"}),
    ("lab-packing", {"n_features", "s_index"}), ("superposition-panel", {"s_index"}),
    ("sae-recovery", {"target_S", "dict", "lam"}), ("correlated-features", {"c_index"})])
def test_labs_have_bound_controls(built, fid, controls):
    params = canonical_spec(built[fid]).get("params", [])
    bound = {p["name"] for p in params if "bind" in p}
    assert controls <= bound


def test_spec_is_deterministic_across_build_order(trained, built):
    again = {f.id: f for f in reversed(figures.build_all(trained))}
    for fid in STABLE_IDS:
        assert canonical_spec(again[fid]) == canonical_spec(built[fid])


def test_facts_come_from_the_models(built, trained):
    panel = built["superposition-panel"].facts
    onset = float(panel["onset_sparsity"])
    assert 0.4 < onset < 0.8, "ours: superposition starts between the brief's 0.4 and 0.8"
    corr = built["lab-correlations"].facts
    assert corr["rotation_loss"] == corr["rotated_loss"], "a linear hidden layer has no basis"
    assert corr["basic_features_per_neuron"] != corr["rotated_features_per_neuron"]
    assert built["lab-packing"].facts["pentagon_sparsity"] != "never"
    assert float(built["phase-diagram"].facts["agreement"].rstrip("%")) >= 85


def test_concentration_of_measure_matches_one_over_m(built):
    df = built["concentration"].tables["monte_carlo"]
    assert ((df["mean"] - 1 / df.m).abs() < 4 * (df.hi - df["mean"]) / 2 + 1e-9).all()
    assert list(df.m) == concentration.DIMENSIONS


def test_lab_packing_facts_say_what_the_models_do(built):
    """Essay Lab 3.3: the dense five-feature model spreads about two dimensions' worth of squared
    norm (uniform importance, dense inputs: W^T W is close to a rank-2 projection, trace 2); the
    best n = 5 model is a regular pentagon at every sparsity from `pentagon_sparsity` up, and a
    square (four live features, one dropped) at some sparsity below it."""
    fig = built["lab-packing"]
    facts, arrows, cells = fig.facts, fig.tables["arrows"], fig.tables["models"]
    assert abs(facts["dense_norm_sq_n5"] - 2) < 0.2
    assert facts["square_sparsities"] != "none"
    onset = float(facts["pentagon_sparsity"])
    assert all(float(s) < onset for s in facts["square_sparsities"].split(", "))
    five = cells[(cells.n == 5) & (cells.sparsity.astype(float) >= onset)]
    assert len(five) >= 2
    for s_index in five.s_index:
        a = arrows[(arrows.n == 5) & (arrows.s_index == s_index)]
        assert (a.norm > 0.5).all()
        angles = sorted(np.degrees(np.arctan2(a.y, a.x)) % 360)
        gaps = np.diff(angles + [angles[0] + 360])
        assert np.abs(gaps - 72).max() < 6, (s_index, gaps)


# --- adversarial vulnerability -----------------------------------------------------------------

def test_the_attack_is_the_papers_and_scores_a_plain_model_at_one():
    """lambda (WᵀW)_i / ||(WᵀW)_i|| moves output i by lambda in a model that keeps its features in
    their own dimensions, so that model's loss increase per lambda^2 is I_1/n: vulnerability 1."""
    W = np.hstack([np.eye(5), np.zeros((5, 15))])
    x = adversarial.inputs(0.9, 20, 4096)
    I = 0.7 ** np.arange(20)
    lam, clean, attacked, vul = adversarial.vulnerability(W, np.zeros(20), I, x, relu=False)
    assert lam == pytest.approx(0.1 * np.linalg.norm(x, axis=1).mean())
    assert vul == pytest.approx(1.0, abs=1e-6)
    # Two features sharing one dimension antipodally: pushing one moves the other's output too.
    W2 = np.hstack([np.array([[1.0, -1.0]] + [[0.0, 0.0]] * 4), np.eye(5)[:, :3], np.zeros((5, 15))])
    assert adversarial.vulnerability(W2, np.zeros(20), I, x, relu=False)[3] > 1.5


def test_superposition_makes_the_models_more_vulnerable(built, trained):
    """The paper ("Relationship to Adversarial Robustness"), with this attack: vulnerability
    "sharply increases as superposition forms (increasing by >3x)" and "closely tracks the number
    of features per dimension". Ours, n=20, m=5, I_i=0.7^i: the linear model and the dense ReLU
    model (no superposition) score 1; the lowest-loss superposed ReLU models score more than the
    linear model at the same sparsity, up to about 2x at S = 0.93-0.97, and track features per
    dimension (rank correlation) up to that peak, among the lowest-loss seeds and among all 36
    models (3 seeds x 12 sparsities) of 0 < S <= 0.95 alike. How much more than the linear model
    a sparsity's best model scores depends on which arrangement wins, and near-tied seeds store
    different ones: at S = 0.7 two seeds 0.5% apart in loss store 7 features each and score 1.10
    and 1.32 (a seed that stores 8 scores 1.85), so the margin over the linear model asked of
    each is 5%, far above the linear model's own spread (1.000 +- 0.001). Past the peak the paper's budget (a tenth of a
    shrinking average input) falls below the ReLU threshold and vulnerability falls: the >3x is
    not reached here (see the figure's facts)."""
    df = built["adversarial"].tables["vulnerability"]
    relu = df[df.model == "ReLU model"].set_index("sparsity")
    lin = df[df.model == "linear model"].set_index("sparsity")
    assert np.allclose(lin.vulnerability, 1.0, atol=0.02)
    assert relu.vulnerability[0.0] == pytest.approx(1.0, abs=0.02)
    for s in (0.7, 0.9, 0.99):
        assert relu.features_per_dimension[s] > 1.3
        assert relu.vulnerability[s] > 1.05 * lin.vulnerability[s], s
    peak = relu.vulnerability.idxmax()
    assert peak >= 0.9 and relu.vulnerability[peak] > 1.8 * relu.vulnerability[0.0]
    upto = relu.loc[:peak]
    assert adversarial.rank_correlation(upto.vulnerability, upto.features_per_dimension) >= 0.8
    tr, vul, fpd = trained[adversarial.FAMILY], [], []
    for k, inst in enumerate(tr.family.instances):
        if 0 < inst.sparsity <= 0.95:
            W, b, _ = tr.model(k)
            vul.append(adversarial.vulnerability(W, b, inst.importance,
                                                 adversarial.inputs(inst.sparsity, inst.n))[3])
            fpd.append(1 / metrics.geometry(W)["dims_per_feature"])
    assert len(vul) == 36 and adversarial.rank_correlation(vul, fpd) >= 0.8


# --- learning dynamics -------------------------------------------------------------------------

def test_the_dynamics_rules_can_say_no():
    """The plateau, drop and jump rules find nothing in a smooth exponential loss or in
    dimensionalities that drift slowly, and find the event planted in a step-shaped trace."""
    t = np.arange(40)
    assert learning_dynamics.plateau_drops(0.07 + 0.02 * np.exp(-t / 8)) == []
    stepped = np.where(t < 20, 0.08, 0.07) + 1e-5 * t
    assert learning_dynamics.plateau_drops(np.minimum.accumulate(stepped)) != []
    slow = np.linspace(0.2, 0.5, 40)[:, None] * np.ones((1, 3))
    assert learning_dynamics.jumps(slow, np.ones((40, 3))) == []
    slow[20:, 1] = 1.0
    assert {i for i, _, _ in learning_dynamics.jumps(slow, np.ones((40, 3)))} == {1}


def test_a_loss_drop_after_a_plateau_meets_a_dimensionality_jump(trained, built):
    """The paper ("Superposition and Learning Dynamics", Phenomenon 1): in a uniform-importance
    run whose features end in antipodal pairs (digons), features' dimensionalities jump and "the
    loss curve also undergoes a sudden drop" as they do. The paper shows one chosen run; we test
    the lowest-loss seed (n=100, m=10, 1-S=0.33): a plateau, then a drop of at least 3%, which a
    jump of at least 0.25 in some feature's D_i meets within two snapshots; and at the end most
    represented features at D_i = 1/2."""
    tr = trained[learning_dynamics.FAMILY]
    k = int(lowest_loss(tr)[0])
    D, norm = learning_dynamics.dimensionalities(tr.arrays["snap_W"][k])
    loss = tr.arrays["snap_loss"][k].astype(np.float64)
    events = learning_dynamics.coincident(learning_dynamics.plateau_drops(loss),
                                          learning_dynamics.jumps(D, norm))
    assert any(features for _, features in events), events
    final = D[-1][norm[-1] > REPRESENTED]
    assert len(final) >= 2 * tr.family.m - 2 and np.mean(np.abs(final - 0.5) < 0.02) >= 0.8
    # The curve is the training loss: its last point agrees with the paired evaluation.
    assert loss[-1] == pytest.approx(float(tr.arrays["final_loss"][k]), rel=0.01)
    facts = built["learning-dynamics"].facts
    assert facts["jumping"] >= 1 and facts["plateau_from"] != "none"


def test_phase_diagram_has_the_papers_regions(built):
    """Elhage et al. 2022, "Superposition as a Phase Change" (n=2, m=1): when dense, the extra
    feature is dropped if it matters less than the first and takes the dimension if it matters
    more, with no superposition; the superposition region opens around equal importance as the
    features get sparser and never narrows, until at the sparse end it covers every importance.
    Read from the figure's cells (the lowest-loss seed of each), not from the theory."""
    cells = built["phase-diagram"].tables["cells"]
    assert (cells[cells.regime == "not represented"].importance < 1).all()
    assert (cells[cells.regime == "dedicated dimension"].importance > 1).all()
    spans = []
    for density, col in sorted(cells.groupby("density"), reverse=True):  # dense first
        sup = col[col.regime == "superposition"].importance
        spans.append((sup.min(), sup.max()) if len(sup) else (1.0, 1.0))
        if density == 1.0:
            assert not len(sup), "dense: no superposition"
    for (lo0, hi0), (lo1, hi1) in zip(spans, spans[1:]):
        assert lo1 <= lo0 and hi1 >= hi0, spans
    assert spans[-1] == (cells.importance.min(), cells.importance.max())


def test_phase_diagram_reports_the_papers_averaging(built):
    """The paper drops each point's highest-loss model and averages the rest; the strength of a
    cell is the share of the kept seeds in its regime. The essay says every cell where the
    regime most kept seeds take misses the theory is one where superposition is optimal."""
    fig = built["phase-diagram"]
    facts, cells = fig.facts, fig.tables["cells"]
    assert facts["kept_seeds"] == facts["seeds"] - 1
    shares = cells[["share_not_represented", "share_dedicated", "share_superposition"]]
    assert np.allclose(shares.sum(axis=1), 1)
    assert np.allclose(shares * facts["kept_seeds"], np.round(shares * facts["kept_seeds"]))
    misses = cells[~cells.average_agrees]
    assert len(misses) == facts["cells"] - facts["average_agree_cells"]
    assert (misses.theory == "superposition").all()
    assert facts["average_short_of_superposition"] == len(misses)
    # the essay: at densities below 0.1 the kept seeds split where the importances are close
    # (within about 2x: just over half, 58%, find superposition) and nearly all find it at 4x or more
    sparse = cells[(cells.theory == "superposition") & (cells.density < 0.1)]
    ratio = np.abs(np.log10(sparse.importance))
    close = sparse[ratio < 0.35].share_superposition.mean()
    far = sparse[ratio > 0.59].share_superposition.mean()
    assert 0.5 < close < 0.65 and far > 0.97, (close, far)


def _contrast(a, b):
    lum = [0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2] for c in (
        [((x / 255) / 12.92 if x / 255 <= 0.03928 else ((x / 255 + 0.055) / 1.055) ** 2.4) for x in c]
        for c in (a, b))]
    return (max(lum) + 0.05) / (min(lum) + 0.05)


def _rgb(hex_colour):
    named = {"black": "#000000", "white": "#ffffff"}
    h = named.get(hex_colour, hex_colour).lstrip("#")
    return [int(h[i:i + 2], 16) for i in (0, 2, 4)]


def _over(colour, alpha, background):
    return [alpha * c + (1 - alpha) * g for c, g in zip(colour, background)]


def test_phase_diagram_marks_read_in_both_themes(built):
    """Issue 24: the "share of seeds" legend's steps and the theory's dashed boundary must be
    told apart on the light page and on Vega's dark theme (background #333), not only the text.
    Every cell colour, at the faintest and the strongest opacity, has a boundary stroke at 3:1
    or more against it; the legend's faintest and strongest steps differ by 1.5:1 or more."""
    spec = canonical_spec(built["phase-diagram"])
    marks, found = [], {}

    def walk(node):
        if isinstance(node, dict):
            mark = node.get("mark")
            if isinstance(mark, dict):
                marks.append(mark)
            opacity = node.get("encoding", {}).get("opacity") if "encoding" in node else None
            if opacity:
                found["opacity"] = opacity
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(spec)
    strokes = [_rgb(m["color"]) for m in marks if m.get("type") == "line"]
    opacity = found["opacity"]
    faint, strong = opacity["scale"]["range"]
    legend = _rgb(opacity["legend"].get("symbolFillColor", "black"))
    regimes = [_rgb(c) for c in figures.PALETTE[:3]]
    for background in ([255, 255, 255], [51, 51, 51]):
        for colour in regimes:
            for alpha in (faint, strong):
                cell = _over(colour, alpha, background)
                assert max(_contrast(s, cell) for s in strokes) >= 3, (background, colour, alpha)
        assert _contrast(_over(legend, faint, background), _over(legend, strong, background)) >= 1.5
