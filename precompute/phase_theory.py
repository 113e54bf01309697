"""The theoretical phase diagram for n=2 features in m=1 dimension (Elhage et al. 2022, "Superposition
as a phase change"): which of three candidate solutions has the lowest expected loss.

Feature 1 has importance 1, feature 2 importance r; each is active with probability p = 1 - S,
uniform on [0, 1] when active. With W = [w1, w2] the candidates are
  not represented   W = [1, 0]: x1 exact; feature 2 can only be its mean, loss r Var(x)/2
  dedicated dim     W = [0, 1]: the same with the roles swapped, loss Var(x)/2
  superposition     W = [w1, -w2]: antipodal, each read-out ReLU(w_i^2 x_i - w1 w2 x_j + b_i)
with Var(x) = p/3 - p^2/4. The superposition loss is minimised over w1, w2 and b_i <= 0 with
exact expectations by midpoint quadrature; no sampling, no gradient descent.
"""
import numpy as np

REGIMES = ("not represented", "dedicated dimension", "superposition")
_W = np.linspace(0.3, 1.6, 27)  # candidate norms w1, w2
_B = np.linspace(-1.2, 0.0, 61)  # candidate biases (<= 0, so an inactive feature reads 0)
_Q = (np.arange(40) + 0.5) / 40  # midpoint rule on [0, 1]


def _tables():
    """Expected squared error of feature 1's read-out, split by which features are active:
    T1[w1, b]     only x1 active:  E (x1 - ReLU(w1^2 x1 + b))^2
    T2[w1, w2, b] both active:     E (x1 - ReLU(w1^2 x1 - w1 w2 x2 + b))^2
    (only x2 active or none: the read-out ReLU(-w1 w2 x2 + b) is 0 for b <= 0, so no error)."""
    a = _W[:, None, None] ** 2
    x1 = _Q[None, None, :]
    t1 = ((x1 - np.maximum(a * x1 + _B[None, :, None], 0)) ** 2).mean(-1)
    x1, x2 = _Q[:, None], _Q[None, :]
    t2 = np.empty((len(_W), len(_W), len(_B)))
    for i, w1 in enumerate(_W):
        z = w1 ** 2 * x1 - w1 * _W[:, None, None, None] * x2 + _B[None, :, None, None]
        t2[i] = ((x1 - np.maximum(z, 0)) ** 2).mean(axis=(-1, -2))
    return t1, t2


_T1, _T2 = _tables()


def losses(p, r):
    """Expected loss (mean over the two features) of each candidate, shape (3,)."""
    var = p / 3 - p ** 2 / 4
    e1 = (p * (1 - p) * _T1[:, None, :] + p ** 2 * _T2).min(-1)  # [w1, w2]
    e2 = e1.T  # feature 2's error is feature 1's with the roles of w1 and w2 swapped
    return np.array([r * var / 2, var / 2, ((e1 + r * e2) / 2).min()])


def regime(p, r):
    return REGIMES[int(np.argmin(losses(p, r)))]


def boundaries(densities, importances):
    """Where the predicted regime changes along the importance axis, for each density:
    a list of {density, importance, boundary} points, boundary naming the two regimes."""
    points = []
    for p in densities:
        labels = [regime(p, r) for r in importances]
        for k in range(1, len(labels)):
            if labels[k] != labels[k - 1]:
                r = float(np.sqrt(importances[k] * importances[k - 1]))
                points.append({"density": float(p), "importance": r,
                               "boundary": " / ".join(sorted((labels[k - 1], labels[k])))})
    return points
