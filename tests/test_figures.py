"""The figures: built from the trained models, valid standalone Vega-Lite, interactive where the
issue asks, and quoting numbers that agree with the models and with the mathematics."""
import json

import numpy as np
import pytest
import vl_convert

from precompute import figures
from precompute.figures import concentration
from render.figure_export import canonical_spec

STABLE_IDS = ["lab-correlations", "lab-interference", "lab-packing", "superposition-panel",
              "phase-diagram", "dimensionality", "concentration", "sae-recovery",
              "correlated-features", "computation"]


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
