"""Concentration of measure: the mean squared inner product of two random unit vectors in m
dimensions, by Monte Carlo with its spread, beside the exact value 1/m."""
import altair as alt
import numpy as np
import pandas as pd

from precompute.figures import PALETTE, Figure

ID = "concentration"
FAMILIES = []
FACTS = ('pairs', 'worst_error', 'm5', 'm512')  # the names build() puts in facts, for --check
DIMENSIONS = [2, 3, 5, 8, 12, 20, 32, 50, 80, 128, 200, 320, 512]
PAIRS = 4000
SEED = 20221


def build(trained):
    rng = np.random.default_rng(SEED)
    rows = []
    for m in DIMENSIONS:
        u, v = rng.standard_normal((2, PAIRS, m))
        dot2 = (np.sum(u * v, 1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))) ** 2
        mean, se = dot2.mean(), dot2.std(ddof=1) / np.sqrt(PAIRS)
        q25, q75 = np.quantile(dot2, [0.25, 0.75])
        rows.append({"m": m, "mean": round(float(mean), 6), "exact": round(1 / m, 6),
                     "lo": round(float(mean - 2 * se), 6), "hi": round(float(mean + 2 * se), 6),
                     "q25": round(float(q25), 6), "q75": round(float(q75), 6)})
    df = pd.DataFrame(rows)
    worst = float(((df["mean"] - df.exact).abs() / df.exact).max())
    facts = {"pairs": PAIRS, "worst_error": f"{100 * worst:.1f}%",
             "m5": f"{df[df.m == 5]['mean'].iloc[0]:.3f}", "m512": f"{df[df.m == 512]['mean'].iloc[0]:.4f}"}

    x = alt.X("m:Q", scale=alt.Scale(type="log"), title="dimension m")
    y = alt.Y("mean:Q", scale=alt.Scale(type="log"), title="(u·v)² of random unit vectors")
    band = alt.Chart(df).mark_area(opacity=0.25, color=PALETTE[4]).encode(
        x=x, y=alt.Y("q25:Q", scale=alt.Scale(type="log")), y2="q75:Q")
    exact = alt.Chart(df).mark_line(color="black", strokeDash=[5, 3]).encode(x=x, y="exact:Q")
    err = alt.Chart(df).mark_rule(color=PALETTE[0]).encode(x=x, y="lo:Q", y2="hi:Q")
    mean = alt.Chart(df).mark_point(filled=True, color=PALETTE[0], size=45).encode(
        x=x, y=y, tooltip=["m:Q", "mean:Q", "exact:Q", "q25:Q", "q75:Q"])
    chart = alt.layer(band, exact, err, mean).properties(width=460, height=280)

    caption = (f"Mean of (u·v)² over {PAIRS} pairs of random unit vectors in m dimensions (dots, "
               f"with ±2 standard errors), the middle half of the individual values (band), and "
               f"the exact expectation 1/m (dashed). In five dimensions the mean is "
               f"{facts['m5']}; in 512 it is {facts['m512']}. The largest relative gap from 1/m "
               f"is {facts['worst_error']}.")
    description = ("Log-log chart of the mean squared inner product of random unit vectors "
                   "against dimension, following the exact line 1 over m.")
    return Figure(ID, "Random directions are nearly orthogonal", caption, description, chart,
                  {"monte_carlo": df}, FAMILIES, {"pairs": PAIRS, "seed": SEED,
                                            "dimensions": DIMENSIONS}, facts)


# Each fact's preview in the essay: (what it is, table, rows, models), see figures.note.
FACT_NOTES = {
    "pairs": "pairs of random unit vectors drawn at each dimension m",
    "worst_error": ("largest relative gap between the Monte Carlo mean of (u·v)² and the exact "
                    "1/m, over every dimension", "monte_carlo", "all rows, mean against exact"),
    "m5": ("Monte Carlo mean of (u·v)² for pairs of random unit vectors in m = 5 dimensions",
           "monte_carlo", "the row m = 5, column mean"),
    "m512": ("Monte Carlo mean of (u·v)² for pairs of random unit vectors in m = 512 dimensions",
             "monte_carlo", "the row m = 512, column mean"),
}
