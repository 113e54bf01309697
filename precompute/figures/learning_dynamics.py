"""Superposition during training (the paper's "Superposition and Learning Dynamics"): each
feature's dimensionality D_i and the training loss at log-spaced steps of a uniform-importance
run whose represented features all end in antipodal pairs (D_i = 1/2), with the loss plateaus,
the drops after them and the features' dimensionality jumps found by the rules below."""
import altair as alt
import numpy as np
import pandas as pd

from precompute import metrics
from precompute.figures import PALETTE, Figure
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss

ID = "learning-dynamics"
FAMILY = "dynamics"
FAMILIES = [FAMILY]
# the names build() puts in facts, for --check
FACTS = ('n', 'm', 'density', 'snapshots', 'seed', 'seeds', 'seeds_with_event', 'plateau_from',
         'plateau_to', 'drop_to', 'drop', 'plateau_fall', 'drop_steps', 'jumping',
         'other_jumping', 'rising', 'falling', 'rise_from_d', 'rise_from_step', 'rise_to_step',
         'fall_peak_d', 'fall_out_step', 'final_half', 'final_represented')
KINDS = ["jumps during the drop", "jumps elsewhere", "no jump"]
# A plateau: at least PLATEAU snapshot intervals in a row in which the training loss falls by
# less than FLAT of itself. A drop: the loss then falls by at least DROP of itself within DROP_SPAN
# intervals. A jump: a feature's D_i moves by at least JUMP within JUMP_SPAN intervals (the
# snapshots are log-spaced, so JUMP_SPAN intervals are a fixed factor in steps), the feature
# represented (||W_i|| > REPRESENTED) at one end. They coincide when the jump's window meets the
# drop's window widened by SLACK snapshots.
PLATEAU, FLAT, DROP, DROP_SPAN = 4, 0.003, 0.03, 6
JUMP, JUMP_SPAN, SLACK = 0.25, 3, 2


def dimensionalities(W_snaps):
    """D_i and ||W_i|| at every snapshot: two arrays (snapshots, n)."""
    geo = [metrics.geometry(W) for W in W_snaps]
    return np.array([g["dimensionality"] for g in geo]), np.array([g["norm"] for g in geo])


def plateau_drops(loss):
    """[(plateau start, plateau end, drop end)] in snapshot indices, by the rules above."""
    fall = (loss[:-1] - loss[1:]) / loss[:-1]  # fall[k]: from snapshot k to k + 1
    flat = fall < FLAT
    events = []
    for end in range(PLATEAU, len(loss) - 1):
        if flat[end - PLATEAU:end].all() and not flat[end]:
            stop = min(end + DROP_SPAN, len(loss) - 1)
            if (loss[end] - loss[stop]) / loss[end] >= DROP:
                start = end - PLATEAU
                while start > 0 and flat[start - 1]:
                    start -= 1
                events.append((start, end, stop))
    return events


def jumps(D, norm):
    """[(feature, first snapshot, last snapshot)] for each jump, by the rules above."""
    found = []
    for j in range(len(D) - JUMP_SPAN):
        moved = np.abs(D[j + JUMP_SPAN] - D[j]) >= JUMP
        seen = (norm[j] > REPRESENTED) | (norm[j + JUMP_SPAN] > REPRESENTED)
        found += [(int(i), j, j + JUMP_SPAN) for i in np.flatnonzero(moved & seen)]
    return found


def coincident(events, found):
    """The plateau-drop events with the features whose jumps meet their drop."""
    return [(ev, sorted({i for i, a, b in found if a <= ev[2] + SLACK and b >= ev[1] - SLACK}))
            for ev in events]


def settling(D, norm, features, end):
    """What the drop's features do from the plateau's end on: those still represented at the
    last snapshot (rising) and the rest (falling), with the rising ones' D_i at the plateau's end
    and the snapshot from which all of them stay within 0.02 of their final D_i, and the falling
    ones' largest D_i and the snapshot from which none of them is represented any more."""
    rising = [i for i in features if norm[-1, i] > REPRESENTED]
    falling = [i for i in features if norm[-1, i] <= REPRESENTED]
    settled = max((int(np.flatnonzero(np.abs(D[:, i] - D[-1, i]) >= 0.02).max()) + 1
                   for i in rising), default=None)
    out = max((int(np.flatnonzero(norm[:, i] > REPRESENTED).max()) + 1 for i in falling),
              default=None)
    return {"rising": rising, "falling": falling, "rise_from": D[end, rising],
            "settled": settled, "fall_peak": D[:, falling].max() if falling else None, "out": out}


def build(trained):
    tr = trained[FAMILY]
    fam, a = tr.family, tr.arrays
    steps = a["snap_steps"]
    per_seed = []
    for k in range(len(fam.instances)):
        D, norm = dimensionalities(a["snap_W"][k])
        loss = a["snap_loss"][k].astype(np.float64)
        found = jumps(D, norm)
        per_seed.append((D, norm, loss, [e for e in coincident(plateau_drops(loss), found) if e[1]],
                         {i for i, _, _ in found}))
    best = int(lowest_loss(tr)[0])
    D, norm, loss, events, jumped = per_seed[best]
    # The largest drop (short runs, as in the build tests' 100-step grid, may have none).
    (start, end, stop), jumping = max(events, key=lambda e: loss[e[0][1]] - loss[e[0][2]]) \
        if events else ((None, None, None), [])
    inst = fam.instances[best]
    ever = np.flatnonzero((norm > REPRESENTED).any(0))
    feats = pd.DataFrame([{"step": int(s), "feature": int(i) + 1, "D": round(float(D[j, i]), 4),
                           "kind": KINDS[0 if i in jumping else 1 if i in jumped else 2],
                           "represented": bool(norm[j, i] > REPRESENTED)}
                          for j, s in enumerate(steps) for i in ever])
    curve = pd.DataFrame({"step": steps.astype(int), "loss": np.round(loss, 6)})
    windows = pd.DataFrame([{"from": int(steps[start]), "to": int(steps[end]), "phase": "plateau"},
                            {"from": int(steps[end]), "to": int(steps[stop]), "phase": "drop"}]
                           if events else [], columns=["from", "to", "phase"])
    at = lambda j: f"{steps[j]:,}" if j is not None else "none"
    final = D[-1][norm[-1] > REPRESENTED]
    moves = settling(D, norm, jumping, end) if events else settling(D, norm, [], -1)
    span = lambda v: "–".join(dict.fromkeys(f"{x:.2f}" for x in (v.min(), v.max()))) \
        if len(v) else "none"
    facts = {"n": inst.n, "m": fam.m, "density": f"{1 - inst.sparsity:.2f}",
             "snapshots": len(steps), "seed": inst.seed, "seeds": fam.seeds,
             "seeds_with_event": sum(bool(s[3]) for s in per_seed),
             "plateau_from": at(start), "plateau_to": at(end), "drop_to": at(stop),
             "drop": f"{100 * (loss[end] - loss[stop]) / loss[end]:.1f}%" if events else "none",
             "plateau_fall": f"{100 * (loss[start] - loss[end]) / loss[start]:.1f}%"
                             if events else "none",
             "drop_steps": f"{steps[stop] - steps[end]:,}" if events else "none",
             "jumping": len(jumping), "other_jumping": len(jumped - set(jumping)),
             "rising": len(moves["rising"]), "falling": len(moves["falling"]),
             "rise_from_d": span(moves["rise_from"]), "rise_from_step": at(end),
             "rise_to_step": at(moves["settled"]),
             "fall_peak_d": "none" if moves["fall_peak"] is None else f"{moves['fall_peak']:.2f}",
             "fall_out_step": at(moves["out"]),
             "final_half": int((np.abs(final - 0.5) < 0.02).sum()),
             "final_represented": len(final)}

    x = alt.X("step:Q", scale=alt.Scale(type="log"), title="training step")
    shade = alt.Chart(windows).mark_rect(opacity=0.18).encode(
        x="from:Q", x2="to:Q", color=alt.Color("phase:N", title=None, scale=alt.Scale(
            domain=["plateau", "drop"], range=["#999999", PALETTE[1]])))
    lines = alt.Chart(feats).mark_line(strokeWidth=1.5).encode(
        x=x, y=alt.Y("D:Q", title="feature dimensionality Dᵢ", scale=alt.Scale(domain=[0, 1.05])),
        detail="feature:N", opacity=alt.condition(alt.datum.kind == KINDS[2], alt.value(0.3),
                                                  alt.value(0.95)),
        color=alt.Color("kind:N", title=None, scale=alt.Scale(
            domain=KINDS, range=[PALETTE[5], PALETTE[3], PALETTE[0]])),
        tooltip=["feature:N", "step:Q", "D:Q", "represented:N"])
    half = alt.Chart(pd.DataFrame({"D": [0.5, 1.0]})).mark_rule(color="gray", strokeDash=[4, 3]
                                                                 ).encode(y="D:Q")
    top = alt.layer(shade, half, lines).resolve_scale(color="independent").properties(
        width=500, height=220)
    bottom = alt.layer(shade, alt.Chart(curve).mark_line(color=PALETTE[7], point=True).encode(
        x=x, y=alt.Y("loss:Q", title="training loss", scale=alt.Scale(zero=False)),
        tooltip=["step:Q", alt.Tooltip("loss:Q", format=".5f")])).properties(width=500, height=160)
    chart = alt.vconcat(top, bottom).resolve_scale(color="independent")

    caption = (f"One training run, n = {facts['n']} features of equal importance in m = "
               f"{facts['m']} dimensions at feature density {facts['density']} (the lowest-loss "
               f"of {facts['seeds']} seeds), recorded at {facts['snapshots']} log-spaced steps. Top: "
               f"each feature's dimensionality Dᵢ. Bottom: the training loss, averaged over the "
               f"steps since the previous record. The loss sits on a plateau from step "
               f"{facts['plateau_from']} to {facts['plateau_to']} (falling {facts['plateau_fall']}), "
               f"then drops {facts['drop']} by step {facts['drop_to']}. Around the drop "
               f"{facts['jumping']} features (orange) change Dᵢ by {JUMP} or more within "
               f"{JUMP_SPAN} records: {facts['rising']} climb from {facts['rise_from_d']} at step "
               f"{facts['rise_from_step']} to 1/2 by step {facts['rise_to_step']}, and "
               f"{facts['falling']} leaves the model (largest Dᵢ {facts['fall_peak_d']}, no longer "
               f"represented from step {facts['fall_out_step']}). Elsewhere, with no drop the rules "
               f"detect, {facts['other_jumping']} more (pink) change as much. At the "
               f"end {facts['final_half']} of the {facts['final_represented']} represented features "
               f"sit at Dᵢ = 1/2, in antipodal pairs. {facts['seeds_with_event']} of "
               f"{facts['seeds']} seeds show such a drop.")
    description = ("Two stacked line charts on a log step axis: each feature's dimensionality "
                   "during training, with the features that change most highlighted, and the "
                   "training "
                   "loss, with the plateau and the drop after it shaded.")
    return Figure(ID, "Feature dimensionality during training", caption, description, chart,
                  {"features": feats, "loss": curve, "windows": windows}, FAMILIES,
                  {"snapshots": "log-spaced steps, W and b kept (grid: snapshots)",
                   "loss": "mean training loss over the steps since the previous snapshot",
                   "rules": f"plateau: >= {PLATEAU} intervals each falling < {FLAT:.1%}; drop: "
                            f">= {DROP:.0%} within {DROP_SPAN} intervals; jump: |dD_i| >= {JUMP} "
                            f"within {JUMP_SPAN} intervals, within {SLACK} snapshots of the drop",
                   "size": "the paper's setup is n=400, m=30 (grid-paper.toml); the default "
                           "grid trains n=100, m=10, about the paper's ratio of n to m",
                   "selection": "lowest final loss of the seeds"}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "n": "features n (of equal importance) in the recorded run",
    "m": "hidden dimensions m of the recorded run",
    "density": "feature density 1 − S of the recorded run",
    "snapshots": ("snapshots of W recorded during training", "features",
                  "column step, distinct values"),
    "seed": "seed of the recorded run, the lowest-loss one",
    "seeds": "seeds trained; the lowest-loss one is drawn",
    "seeds_with_event": "seeds whose loss has a plateau and drop in which some feature jumps",
    "plateau_from": ("training step where the plateau before the run's largest loss drop begins",
                     "windows", "the row phase = plateau, column from"),
    "plateau_to": ("training step where that plateau ends and the drop begins", "windows",
                   "the row phase = drop, column from"),
    "drop_to": ("training step where the drop ends", "windows", "the row phase = drop, column to"),
    "drop": ("how far the loss falls in the drop, as a share of its value at the drop's start",
             "loss", "rows at the drop's first and last step"),
    "plateau_fall": ("how far the loss falls over the plateau itself, as a share of its value at "
                     "the plateau's start", "loss", "rows at the plateau's first and last step"),
    "drop_steps": ("training steps the drop spans, from its start to its end", "windows",
                   "the row phase = drop, to − from"),
    "jumping": ("features whose D_i jumps (by 0.25 or more within 3 snapshots) within 2 "
                "snapshots of the largest drop", "features",
                "rows with kind = jumps during the drop, distinct features"),
    "other_jumping": ("features whose D_i jumps at some other time of the run, not around that "
                      "drop", "features", "rows with kind = jumps elsewhere, distinct features"),
    "rising": ("of the features jumping around the drop, those still represented (‖W_i‖ > 0.5) at "
               "the last step", "features", "rows with kind = jumps during the drop, represented "
               "at the last step"),
    "falling": ("of the features jumping around the drop, those no longer represented at the "
                "last step", "features", "rows with kind = jumps during the drop, not represented "
                "at the last step"),
    "rise_from_d": ("lowest to highest D_i of the rising features at the drop's start",
                    "features", "those features' rows at the plateau's last step"),
    "rise_from_step": ("training step of the drop's start, where the rising features' D_i is "
                       "read", "windows", "the row phase = drop, column from"),
    "rise_to_step": ("training step from which every rising feature's D_i stays within 0.02 of "
                     "its final value", "features", "those features' rows, column D"),
    "fall_peak_d": ("the largest D_i a falling feature reaches at any step of the run",
                    "features", "the falling features' rows, the largest D"),
    "fall_out_step": ("training step from which none of the falling features is represented any "
                      "more", "features", "the falling features' rows with represented = false "
                      "to the end"),
    "final_half": ("represented features with D_i within 0.02 of 1/2 at the last step",
                   "features", "rows of the last step, represented, |D − 0.5| < 0.02"),
    "final_represented": ("features with ‖W_i‖ > 0.5 at the last step", "features",
                          "rows of the last step with represented = true"),
}
