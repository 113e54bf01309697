"""The figures: built from the trained models, valid standalone Vega-Lite, interactive where the
issue asks, and quoting numbers that agree with the models and with the mathematics."""
import json

import numpy as np
import pytest
import vl_convert

from precompute import config, figures, metrics
from precompute.figures import adversarial, computation, concentration, learning_dynamics
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



def test_packing_models_store_no_feature_twice(trained, built):
    """Labs 3.2/3.3 (family packing2d, issue 26): with the best of 3 seeds, 5 of the 36 sparse
    winners (S >= 0.9, n >= 3) pointed two represented features the same way (n=7, S=0.99:
    features 4 and 6 at 0.1 degrees) and the grid counted both; they beat the other seeds by
    2.7-9.2% in loss, so more seeds, not more scoring, was the cure. With 16 no two represented
    features of a chosen model with S > 0 are within 5 degrees (the closest are 55 apart). The
    dense winners are left out: at S = 0 uniform importance makes any 2-D projection optimal, the
    seeds tie within the scoring's noise, and two half-length columns may share a direction.
    Essay Lab 3.2: the only unevenly spread sparse models are n = 3, each an antipodal pair
    with the third feature at right angles to it."""
    tr, close = trained["packing2d"], []
    for k in lowest_loss(tr):
        inst, W = tr.family.instances[k], tr.model(k)[0]
        live = W[:, metrics.geometry(W)["norm"] > REPRESENTED]
        unit = live / np.linalg.norm(live, axis=0)
        cos = unit.T @ unit - 2 * np.eye(unit.shape[1])
        if inst.sparsity > 0 and cos.size and cos.max() > np.cos(np.radians(5)):
            close.append((inst.n, inst.sparsity, float(np.degrees(np.arccos(cos.max())))))
    assert not close
    fig = built["lab-interference"]
    assert fig.facts["uneven_n"] == "3" and int(fig.facts["closest_pair"]) >= 5
    three = fig.tables["trained_angles"].query("n == 3").groupby("sparsity").angle
    for s, angles in three:
        assert np.allclose(sorted(angles), [90, 90, 180], atol=2), (s, list(angles))

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
    each is 5%, far above the linear model's own spread (1.000 +- 0.001). Past the peak
    vulnerability falls and the >3x is not reached here: see the next test for why."""
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


def test_the_fall_past_the_peak_is_the_all_zero_inputs(built, trained):
    """Essay (Safety, adversarial): the rank correlation with features per dimension is 0.95 from
    S = 0 to the peak and 0.60 over the sweep, and past the peak vulnerability falls because most
    inputs are all zero, where the push stays under the ReLU's threshold. Ours, n=20, m=5,
    I_i = 0.7^i, lowest-loss seeds, re-scored here: at S = 0.999 (98% of inputs all zero) the
    worst push raises the loss of the all-zero input by under 1% of what it does to a model
    without superposition, and the sweep-wide score falls below half its peak; on the non-zero
    inputs alone (budget from them) the same model scores within 10% of that score's largest
    value, from the plateau's start to the end of the sweep, while features per dimension grow
    by more than 40% there: the paper's "closely tracks" fails past the plateau's start, and not
    because superposition fades. The facts say what these recounts say."""
    facts, df = built["adversarial"].facts, built["adversarial"].tables["vulnerability"]
    relu = df[df.model == "ReLU model"].reset_index(drop=True)
    tr = trained[adversarial.FAMILY]
    k = int(lowest_loss(tr)[-1])
    inst = tr.family.instances[k]
    W, b, _ = tr.model(k)
    x = adversarial.inputs(inst.sparsity, inst.n)
    lam, _, _, vul = adversarial.vulnerability(W, b, inst.importance, x)
    zero = adversarial.vulnerability(W, b, inst.importance, np.zeros((1, inst.n)), lam=lam)[3]
    nonzero = adversarial.vulnerability(W, b, inst.importance, x[x.any(1)])[3]
    assert inst.sparsity == 0.999 and (~x.any(1)).mean() > 0.95
    assert abs(zero) < 0.01 and vul < 0.5 * relu.vulnerability.max() and nonzero > 1.5
    assert facts["sparsest_nonzero"] == f"{nonzero:.2f}" and facts["sparsest_zero_gain"] == adversarial.share(zero)
    plateau = relu[relu.sparsity >= float(facts["plateau_from"])]
    nz = relu.vulnerability_nonzero
    assert (plateau.vulnerability_nonzero >= 0.9 * nz.max()).all() and len(plateau) >= 3
    assert plateau.features_per_dimension.iloc[-1] > 1.4 * plateau.features_per_dimension.iloc[0]
    peak = relu.vulnerability.idxmax()
    upto = relu.loc[:peak]
    assert facts["rank_unmasked"] == f"{adversarial.rank_correlation(upto.vulnerability, upto.features_per_dimension):.2f}"
    assert facts["rank_all"] == f"{adversarial.rank_correlation(relu.vulnerability, relu.features_per_dimension):.2f}"
    assert float(facts["rank_all"]) < float(facts["rank_unmasked"]) - 0.2


# --- feature dimensionality ---------------------------------------------------------------------

def test_named_fractions_are_counted_by_model(built, trained):
    """Essay ("How many dimensions"): the paper (Feature Dimensionality) finds D_i clustering at
    3/4 (tetrahedron), 2/3 (triangle), 1/2 (antipodal pair), 2/5 (pentagon) and 3/8 (square
    antiprism). Ours, n=200, m=20, the better of two seeds at 14 densities 1/(1-S) = 1..20,
    recounted from the weights (represented features within 0.02 of each fraction): none at
    3/4; the 2/3 features in one model, the 2/5 and 3/8 ones together in one other; the 1/2
    ones in several; and from some density on to the sweep's end every represented D_i is
    below 1/3. The essay says each of these in words, so each is asserted here."""
    facts = built["dimensionality"].facts
    tr = trained["dimensionality"]
    at = {}
    for k in lowest_loss(tr):
        geo = metrics.geometry(tr.model(k)[0])
        D = geo["dimensionality"][geo["norm"] > REPRESENTED]
        inv = round(1 / (1 - tr.family.instances[k].sparsity), 4)
        for name, v in (("3_4", 3 / 4), ("2_3", 2 / 3), ("1_2", 1 / 2), ("2_5", 2 / 5), ("3_8", 3 / 8)):
            if (np.abs(D - v) < 0.02).any():
                at.setdefault(name, {})[inv] = int((np.abs(D - v) < 0.02).sum())
        if inv >= float(facts["below_third_from"]):
            assert (D < 1 / 3).all(), inv
    for name in ("3_4", "2_3", "1_2", "2_5", "3_8"):
        assert facts[f"at_{name}"] == sum(at.get(name, {}).values())
        assert facts[f"models_{name}"] == len(at.get(name, {}))
    assert facts["at_3_4"] == 0 and facts["where_3_4"] == "none"
    assert facts["models_2_3"] == facts["models_2_5"] == facts["models_3_8"] == 1
    assert facts["where_2_5"] == facts["where_3_8"] != facts["where_2_3"]
    assert facts["models_1_2"] >= 3 and facts["below_third_from"] != "none"
    assert facts["sparsest_density"] == "20"


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


def test_the_drops_features_climb_gradually_or_leave(trained, built):
    """Essay ("Superposition during training"): the paper's figure shows features jumping between
    dimensionalities with a "sudden drop" of the loss at each jump. Ours (n=100, m=10, 1-S=0.33,
    lowest-loss seed), as the essay describes it: the plateau still falls (by less than 1%), the
    drop after it takes hundreds of steps; of the features flagged around the drop, the ones
    still represented at the end climb to D_i = 1/2 over at least four records, no single record
    moving them more than half their rise, and the rest end unrepresented. Recounted from the
    snapshots; the facts say the same."""
    facts = built["learning-dynamics"].facts
    tr = trained[learning_dynamics.FAMILY]
    k = int(lowest_loss(tr)[0])
    steps = tr.arrays["snap_steps"]
    D, norm = learning_dynamics.dimensionalities(tr.arrays["snap_W"][k])
    loss = tr.arrays["snap_loss"][k].astype(np.float64)
    events = [e for e in learning_dynamics.coincident(learning_dynamics.plateau_drops(loss),
                                                      learning_dynamics.jumps(D, norm)) if e[1]]
    (start, end, stop), features = max(events, key=lambda e: loss[e[0][1]] - loss[e[0][2]])
    assert 0 < (loss[start] - loss[end]) / loss[start] < 0.01
    assert steps[stop] - steps[end] >= 200 and facts["drop_steps"] == f"{steps[stop] - steps[end]:,}"
    rising = [i for i in features if norm[-1, i] > REPRESENTED]
    falling = [i for i in features if norm[-1, i] <= REPRESENTED]
    assert rising and falling and (facts["rising"], facts["falling"]) == (len(rising), len(falling))
    settled = steps.tolist().index(int(facts["rise_to_step"].replace(",", "")))
    for i in rising:
        path = D[end:settled + 1, i]
        assert abs(D[-1, i] - 0.5) < 0.02 and settled - end >= 4, (i, path)
        assert np.abs(np.diff(path)).max() < 0.5 * (path[-1] - path[0]), (i, path)
    for i in falling:
        assert D[-1, i] < 0.05 and D[:, i].max() >= 0.25


def test_computation_at_the_papers_ratio_is_the_papers_first_features_on_fewer_neurons(built, grid):
    """Essay ("Research", computation): with I_i = 0.8^i, importance depends on the index, not on
    n, so n=40, m=16 keeps the paper's n/m = 2.5 (n=100, m=40, "Superposition vs Sparsity") but
    trains exactly the paper's first 40 features (grid-paper.toml, the paper's size, agrees
    entry by entry), on 16 neurons instead of 40. The paper's other 60 features carry under
    0.1% of its importance; dense, our model has room for at most 8 features (two neurons
    each), so even at best it drops features of importance 0.8^8 = 0.17, more than ten times the
    paper's cut, 0.8^20 (our best dense model falls one short of the bound: see
    test_dense_abs_model_falls_one_feature_short_of_m_over_two)."""
    facts = built["computation"].facts
    ours = grid.families["computation"]
    paper = config.load_grid(config.DEFAULT_GRID.with_name("grid-paper.toml")).families["computation"]
    n, m = ours.instances[0].n, ours.m
    assert (paper.instances[0].n, paper.m) == (computation.PAPER_N, computation.PAPER_M)
    assert n / m == computation.PAPER_N / computation.PAPER_M
    assert paper.instances[0].importance[:n] == ours.instances[0].importance
    I = np.array(paper.instances[0].importance)
    assert facts["paper_tail_share"] == f"{100 * I[n:].sum() / I.sum():.3f}%" and I[n:].sum() < 1e-3 * I.sum()
    assert float(facts["dense_cutoff_importance"]) == pytest.approx(I[m // 2], abs=0.005)
    assert float(facts["paper_cutoff_importance"]) == pytest.approx(I[computation.PAPER_M // 2], abs=5e-4)
    assert I[m // 2] > 10 * I[computation.PAPER_M // 2]


def test_sae_recovery_needs_room_for_the_represented_features_and_an_interior_penalty(built, trained):
    """Lab 3.4: the SAEs on the n=20, m=5 toy models at S = 0.8-0.99 (lowest-loss seed each;
    they represent 7-11 features). Scored as Sharkey, Braun and Millidge do (MMCS over the
    represented features): for every toy model the best lambda among dictionaries of size >= n
    lies strictly inside the swept range (at its edge the sweep would be cut short, as it was
    at [0.003, 0.01, 0.03]); with at least as many latents as represented features the best
    MMCS is at least 0.99, dictionaries between m and n included, and one of m latents stays
    below 0.9. The facts give these minima to three decimals (0.955 is not "0.96")."""
    facts = built["sae-recovery"].facts
    saes = trained["sae.superposition"]
    n, m, l1s = saes.sweep.n, trained["superposition"].family.m, sorted(saes.sweep.l1)
    room, large = [], []
    for s in saes.sweep.sparsities:
        rows = [r for r in saes.rows if r["sparsity"] == s]
        top = max((r for r in rows if r["dict_size"] >= n), key=lambda r: r["mmcs"])
        assert l1s[0] < top["l1"] < l1s[-1], (s, top["l1"])
        large.append(top["mmcs"])
        room.append(max(r["mmcs"] for r in rows if r["dict_size"] >= r["represented"]))
        mid = max(r["mmcs"] for r in rows if r["dict_size"] == int(facts["mid_size"]))
        assert (mid >= 0.99) == (rows[0]["represented"] <= int(facts["mid_size"])), (s, mid)
        assert max(r["mmcs"] for r in rows if r["dict_size"] == m) < 0.9
    assert min(room) >= 0.99 and m < int(facts["mid_size"]) < n
    assert facts["best_with_room"] == f"{min(room):.3f}" and facts["best_at_n"] == f"{min(large):.3f}"
    assert facts["l1_interior"] == "yes"

def test_fact_notes_name_facts_tables_and_models_the_figure_has(built):
    """A fact's preview points a reader at a published table and at model files: each note must
    name a fact the figure builds, one of its tables and some of its grid tables."""
    for fid, notes in figures.fact_notes().items():
        fig = built[fid]
        assert set(notes) <= set(fig.facts), (fid, set(notes) - set(fig.facts))
        for name, note in notes.items():
            assert note["what"] and note["table"] in (None, *fig.tables), (fid, name, note)
            assert set(note["models"] or ()) <= set(fig.families), (fid, name, note)

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


def test_every_declared_fact_has_a_note_and_every_note_a_fact():
    """Each number the essay can quote gets a preview that says what it is and where to check
    it: a fact added without a note (or a note left behind by a renamed fact) fails here."""
    notes = figures.fact_notes()
    for fid, names in figures.facts().items():
        assert not set(names) - set(notes[fid]), (fid, "no note", sorted(set(names) - set(notes[fid])))
        assert not set(notes[fid]) - set(names), (fid, "no such fact", sorted(set(notes[fid]) - set(names)))


def test_superposition_panel_sparse_seeds_differ_beyond_the_scoring_noise(built, trained):
    """Essay L61 and L35: at the sparsest S every seed stores the same number of full-length
    columns (> 0.7), the seeds that count more represented features lose more than three paired
    standard errors, and the paired noise estimate agrees with the evaluation: a fresh draw's gap
    is within four standard errors of the evaluation's (it would fail if the arrangements
    with partial columns past 0.5 tied, as the essay used to say)."""
    from precompute.figures import superposition_panel as sp
    facts, tr = built["superposition-panel"].facts, trained["superposition"]
    assert " to " not in facts["sparse_seed_strong"]
    assert int(facts["sparse_seed_gap_se"]) >= sp.TIE
    fam = tr.family
    last = [k for k, i in enumerate(fam.instances) if i.sparsity == fam.instances[-1].sparsity]
    best = lowest_loss(tr)[-1]
    others = [k for k in last if k != best]
    gap, se = sp.paired_noise(tr, best, others)
    L = tr.arrays["final_loss"]
    assert np.all(np.abs(gap - (L[others] - L[best])) < 4 * se * 2 ** 0.5), (gap, se)
