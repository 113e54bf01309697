"""Lab 3.2: two unit feature directions at an angle, and how much of feature A (active, x_A = 1)
is read out on feature B before and after the ReLU with bias b: W_B . W_A x_A + b = cos(angle) + b.
Below, the angles that trained two-dimensional models actually put between their features."""
import altair as alt
import numpy as np
import pandas as pd

from precompute import metrics
from precompute.figures import PALETTE, Figure, arrows_from_origin
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss

ID = "lab-interference"
FAMILY = "packing2d"
FAMILIES = [FAMILY]
RIGHT_ANGLE_TOLERANCE = 1.0  # degrees
# the names build() puts in facts, for --check
FACTS = ('pairs', 'acute_share', 'median_bias', 'models', 'even_spacing', 'closest_pair',
         'uneven_n', 'uneven_models', 'least_even')
EVEN = 0.9  # closest neighbours at least this share of 360/k apart: evenly spread
ANGLES = np.arange(0, 181, 3)
BIASES = np.round(np.arange(-1.0, 0.501, 0.05), 2)


def trained_angles(tr, min_sparsity=0.9):
    """Angles between every pair of represented features, in the best sparse m=2 models, and per
    model how evenly its k features are spread: the smallest gap between neighbours around the
    circle as a fraction of 360/k (rows n, sparsity, spacing)."""
    rows, spacing = [], []
    for k in lowest_loss(tr):
        inst = tr.family.instances[k]
        if inst.sparsity < min_sparsity or inst.n < 3:
            continue
        W, b, _ = tr.model(k)
        live = np.flatnonzero(metrics.geometry(W)["norm"] > REPRESENTED)
        unit = W[:, live] / np.linalg.norm(W[:, live], axis=0)
        if len(live) >= 3:
            around = np.sort(np.degrees(np.arctan2(unit[1], unit[0])) % 360)
            gaps = np.diff(np.append(around, around[0] + 360))
            spacing.append({"n": inst.n, "sparsity": inst.sparsity,
                            "spacing": float(gaps.min() / (360 / len(live)))})
        for a in range(len(live)):
            for c in range(a + 1, len(live)):
                angle = np.degrees(np.arccos(np.clip(unit[:, a] @ unit[:, c], -1, 1)))
                rows.append({"n": inst.n, "sparsity": inst.sparsity, "angle": round(float(angle), 2)})
    return pd.DataFrame(rows), pd.DataFrame(spacing)


def build(trained):
    tr = trained[FAMILY]
    grid = pd.DataFrame([{"angle": int(a), "bias": float(b),
                          "before ReLU": round(float(np.cos(np.radians(a)) + b), 4),
                          "after ReLU": round(float(max(0.0, np.cos(np.radians(a)) + b)), 4)}
                         for a in ANGLES for b in BIASES])
    pairs, spacing = trained_angles(tr)
    biases = np.concatenate([tr.model(k)[1] for k in lowest_loss(tr)
                             if tr.family.instances[k].sparsity >= 0.9])
    # Square arrangements put pairs at 90 degrees up to float noise in training: count a pair as
    # acute only when it is clearly so, or the share flips with the last bits of the weights.
    near = pairs[pairs.angle < 90 - RIGHT_ANGLE_TOLERANCE]
    uneven = spacing[spacing.spacing < EVEN]
    facts = {"pairs": len(pairs), "acute_share": f"{100 * len(near) / max(len(pairs), 1):.0f}%",
             "median_bias": f"{np.median(biases):.2f}",
             "models": len(spacing), "even_spacing": f"{100 * spacing.spacing.median():.0f}%",
             # two features that point the same way would be stored twice over in one direction
             "closest_pair": f"{pairs.angle.min():.0f}",
             "uneven_n": ", ".join(map(str, sorted(set(uneven.n)))) or "none",
             "uneven_models": len(uneven), "least_even": f"{100 * spacing.spacing.min():.0f}%"}

    angle = alt.param(name="angle", value=60,
                      bind=alt.binding_range(min=0, max=180, step=3, name="angle (degrees)"))
    bias = alt.param(name="bias", value=-0.2,
                     bind=alt.binding_range(min=-1, max=0.5, step=0.05, name="bias b"))
    here = (alt.datum.angle == angle) & (alt.datum.bias == bias)
    vec = pd.DataFrame([{"feature": "A", "angle": 0}, {"feature": "B", "angle": None}])
    scale = alt.Scale(domain=[-1.2, 1.2])
    color = alt.Color("feature:N", scale=alt.Scale(domain=["A", "B"], range=PALETTE[:2]),
                      legend=None)
    arrows = alt.Chart(vec).transform_calculate(
        theta="datum.feature == 'A' ? 0 : angle * PI / 180",
        x="cos(datum.theta)", y="sin(datum.theta)")
    plane = arrows_from_origin(arrows, color, "feature:N", scale, width=3).properties(
        width=220, height=220, title="feature directions")

    long = grid.melt(id_vars=["angle", "bias"], var_name="read-out", value_name="value")
    ro_color = alt.Color("read-out:N", scale=alt.Scale(domain=["before ReLU", "after ReLU"],
                                                       range=[PALETTE[4], PALETTE[5]]),
                         legend=alt.Legend(orient="bottom", title="A read out on B"))
    curve = alt.Chart(long).transform_filter(alt.datum.bias == bias)
    readout = alt.layer(
        curve.mark_line().encode(x=alt.X("angle:Q", title="angle between A and B (degrees)",
                                         scale=alt.Scale(domain=[0, 180])),
                                 y=alt.Y("value:Q", title="interference on B",
                                         scale=alt.Scale(domain=[-2, 1.5])), color=ro_color),
        curve.transform_filter(alt.datum.angle == angle).mark_point(filled=True, size=90).encode(
            x="angle:Q", y="value:Q", color=ro_color, tooltip=["read-out:N", "value:Q"]),
        alt.Chart(long).transform_filter(here).transform_filter(
            alt.datum["read-out"] == "after ReLU").transform_calculate(
            t="'after ReLU: ' + format(datum.value, '.2f')").mark_text(
            align="left", x=5, y=10, fontSize=12).encode(text="t:N"),
    ).properties(width=300, height=220, title="how much of A leaks into B")

    hist = alt.Chart(pairs).mark_bar(color=PALETTE[2]).encode(
        x=alt.X("angle:Q", bin=alt.Bin(step=6), title="angle between represented features in "
                "trained m = 2 models, S ≥ 0.9 (degrees)", scale=alt.Scale(domain=[0, 180])),
        y=alt.Y("count():Q", title="feature pairs")).properties(width=560, height=120)
    chart = alt.vconcat(alt.hconcat(plane, readout).resolve_scale(color="independent"), hist
                        ).add_params(angle, bias)

    caption = (f"Feature A is active (x_A = 1) and B is not. B's read-out is W_B·W_A x_A + b = "
               f"cos θ + b: beyond 90 degrees the ReLU removes the leak outright, and below 90 a "
               f"negative bias can cut a small one to zero. Both tricks need B to be silent; "
               f"when A and B are active together nothing hides the leak. Move the sliders for "
               f"the angle and the bias. Below: the {facts['pairs']} angles between represented "
               f"features in our trained sparse two-dimensional models. No more than three "
               f"directions in a plane can be pairwise obtuse, so {facts['acute_share']} of the "
               f"pairs are acute (under {90 - RIGHT_ANGLE_TOLERANCE:g}°); instead the models "
               f"spread their features around the circle (the closest neighbours sit at a "
               f"median {facts['even_spacing']} of 360°/k apart, no two closer than "
               f"{facts['closest_pair']}°), with a median bias of {facts['median_bias']}.")
    description = ("Two arrows at an adjustable angle, a chart of interference before and after "
                   "the ReLU against angle for an adjustable bias, and a histogram of angles "
                   "between features in trained models.")
    return Figure(ID, "Lab 3.2 — Feature interference geometry", caption, description, chart,
                  {"interference": grid, "trained_angles": pairs}, FAMILIES,
                  {"angles": "0..180 step 3", "biases": "-1..0.5 step 0.05"}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "pairs": ("pairs of represented features (‖W_i‖ > 0.5) in the lowest-loss m = 2 models "
              "with S ≥ 0.9 and n ≥ 3", "trained_angles", "every row"),
    "acute_share": ("share of those pairs at an angle under 89 degrees", "trained_angles",
                    "rows with angle < 89"),
    "median_bias": "median bias b_i of the lowest-loss m = 2 models with S ≥ 0.9",
    "models": ("lowest-loss m = 2 models with S ≥ 0.9 and at least three represented features, "
               "whose spacing is measured"),
    "even_spacing": ("median, over those models, of the smallest angle between neighbouring "
                     "features around the circle, as a share of the even spacing 360°/k"),
    "closest_pair": ("smallest angle, in degrees, between two represented features of those "
                     "models", "trained_angles", "the least angle"),
    "uneven_n": ("feature counts n of the models among those whose closest neighbours sit under "
                 "90% of 360°/k apart"),
    "uneven_models": "how many of those models have closest neighbours under 90% of 360°/k apart",
    "least_even": ("least, over those models, of the smallest neighbour gap as a share of "
                   "360°/k"),
}
