"""The theoretical phase diagram for n=2 features in m=1 dimension (Elhage et al. 2022,
"Superposition as a Phase Change"): the model W = [w1, w2], x' = ReLU(W^T W x + b) of lowest
expected loss, found by minimising the exact expected loss over w1, w2, b1, b2 with no sign or
bias limits, and what it does with the extra feature.

Feature 1 has importance 1, feature 2 importance r; each is active with probability p, uniform on
[0, 1] when active. Feature 1's read-out is ReLU(a x1 + c x2 + b1) with a = w1^2, c = w1 w2, so
its expected squared error splits by which features are active:
  none     (1-p)^2 ReLU(b1)^2
  x1 only  p(1-p) A(a, b1)          A(a, k) = int_0^1 (u - ReLU(a u + k))^2 du   (closed form)
  x2 only  p(1-p) C(c, b1)          C(c, k) = int_0^1 ReLU(c v + k)^2 dv          (closed form)
  both     p^2 int_0^1 A(a, c v + b1) dv                                       (midpoint rule;
           A is C^1 in k, so 128 points put the error far below the gaps between solutions)
and feature 2's the same with a = w2^2, b2. The loss is their importance-weighted mean.
"""
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from precompute import cache
from precompute.metrics import REPRESENTED  # the same threshold as for trained models
from precompute.train import one_thread

REGIMES = ("not represented", "dedicated dimension", "superposition")


def _midpoints(k):
    """The k-point midpoint rule's nodes on [0, 1]."""
    return (torch.arange(k, dtype=torch.float64) + 0.5) / k


_V = _midpoints(128)
# 32 nodes rank the grid; the descent uses all 128. Its own midpoint rule, not every fourth node
# of _V: those sit left of their cells, which underrates the both-active interference (it grows
# with v) and tilted the grid's choice, and so the descent's basin, towards superposition.
_V_COARSE = _midpoints(32)
# The search: a grid over (w1 >= 0, w2, b) first (for fixed W, feature i's error depends on b_i
# alone, so each bias is minimised on its own and the grid does not depend on r), then a local
# descent of the exact loss from the best grid point of every (p, r).
_W1 = torch.linspace(0, 1.6, 33, dtype=torch.float64)  # w -> -w is the same model
_W2 = torch.linspace(-1.6, 1.6, 65, dtype=torch.float64)
_B = torch.linspace(-1.0, 0.7, 35, dtype=torch.float64)
_REFINE_STEPS = 300


def _quad_span(c2, c1, c0, lo, hi):
    """int_lo^hi (c2 t^2 + c1 t + c0) dt, elementwise."""
    return c2 * (hi ** 3 - lo ** 3) / 3 + c1 * (hi ** 2 - lo ** 2) / 2 + c0 * (hi - lo)


def _A(a, k):
    """int_0^1 (u - ReLU(a u + k))^2 du for a >= 0: the ReLU is on for u > -k/a."""
    t0 = (-k / a.clamp_min(1e-12)).clamp(0, 1)
    return t0 ** 3 / 3 + _quad_span((1 - a) ** 2, -2 * (1 - a) * k, k ** 2, t0, torch.ones_like(t0))


def _C(c, k):
    """int_0^1 ReLU(c v + k)^2 dv."""
    edge = (-k / torch.where(c == 0, torch.full_like(c, 1e-12), c)).clamp(0, 1)
    zero, one = torch.zeros_like(edge), torch.ones_like(edge)
    lo = torch.where(c > 0, edge, zero)
    hi = torch.where(c > 0, one, torch.where(c < 0, edge, torch.where(k > 0, one, zero)))
    return _quad_span(c ** 2, 2 * c * k, k ** 2, lo, hi)


def _feature_error(p, a, c, b, v=_V):
    both = _A(a.unsqueeze(-1), c.unsqueeze(-1) * v + b.unsqueeze(-1)).mean(-1)
    return ((1 - p) ** 2 * torch.relu(b) ** 2 + p * (1 - p) * (_A(a, b) + _C(c, b))
            + p ** 2 * both)


def expected_loss(p, r, w):
    """Exact expected loss of W = [w1, w2], b = [b1, b2]; w (..., 4), p and r broadcast."""
    w1, w2, b1, b2 = w.unbind(-1)
    c = w1 * w2
    return (_feature_error(p, w1 ** 2, c, b1) + r * _feature_error(p, w2 ** 2, c, b2)) / 2


def _grid_errors(p):
    """Each feature's error at density p, minimised over its bias, on the (w1, w2) grid:
    two tensors (len(_W1), len(_W2)), and the minimising biases."""
    w1, w2, b = _W1.view(-1, 1, 1), _W2.view(1, -1, 1), _B.view(1, 1, -1)
    c = w1 * w2
    out = []
    for a in (w1 ** 2, w2 ** 2):
        err = _feature_error(p, a.expand(len(_W1), len(_W2), 1), c, b, _V_COARSE)
        best, arg = err.min(-1)
        out.append((best, _B[arg]))
    return out


def optimum(densities, importances):
    """The lowest expected loss and its parameters (w1, w2, b1, b2) for each (p, r) pair."""
    p = np.asarray(densities, dtype=np.float64)
    r = np.asarray(importances, dtype=np.float64)
    start = torch.empty(len(p), 4, dtype=torch.float64)
    for value in np.unique(p):
        (e1, b1), (e2, b2) = _grid_errors(float(value))
        at = np.flatnonzero(p == value)
        loss = (e1 + torch.as_tensor(r[at]).view(-1, 1, 1) * e2) / 2
        flat = loss.flatten(1).argmin(1)
        i, j = flat // len(_W2), flat % len(_W2)
        start[at] = torch.stack([_W1[i], _W2[j], b1[i, j], b2[i, j]], 1)
    pt, rt = torch.as_tensor(p), torch.as_tensor(r)
    w = start.clone().requires_grad_()
    opt = torch.optim.Adam([w], lr=0.003)
    for _ in range(_REFINE_STEPS):
        opt.zero_grad()
        expected_loss(pt, rt, w).sum().backward()
        opt.step()
    with torch.no_grad():
        refined, grid = expected_loss(pt, rt, w), expected_loss(pt, rt, start)
        w = torch.where((refined < grid).unsqueeze(1), w, start)  # descent never makes it worse
        return torch.minimum(refined, grid).numpy(), w.numpy()


def classify(W):
    """The regime of W = [w1, w2] (m = 1), named for what it does with the extra feature 2."""
    one, two = abs(W[0]) > REPRESENTED, abs(W[1]) > REPRESENTED
    if one and two:
        return "superposition"
    return "dedicated dimension" if two else "not represented"


def regimes(densities, importances):
    """The predicted regime at each (density, importance) pair, with the optimum's parameters."""
    _, w = optimum(densities, importances)
    return [classify(v[:2]) for v in w], w


def boundaries(densities, importances, labels):
    """Where the regime `labels` (len(densities) x len(importances)) changes along the importance
    axis, for each density: a list of {density, importance, boundary} points, boundary naming the
    two regimes."""
    points = []
    for i, p in enumerate(densities):
        for k in range(1, len(importances)):
            if labels[i, k] != labels[i, k - 1]:
                points.append({"density": float(p),
                               "importance": float(np.sqrt(importances[k] * importances[k - 1])),
                               "boundary": " / ".join(sorted((labels[i, k - 1], labels[i, k])))})
    return points


@dataclass
class Theory:
    regimes: list  # the predicted regime of each cell, in the order of one seed's instances
    optimum: np.ndarray  # (cells, 4): the optimum's w1, w2, b1, b2 at each cell
    boundaries: list  # boundaries() on a grid twice as fine in density and 41 importances


def solved(p, r):
    """optimum()'s weights on one thread: the same bytes on any machine, and the build solves it
    beside its training workers without taking their cores."""
    with one_thread():
        return optimum(p, r)[1]


def solve(family, cache_dir, log=lambda msg: print(msg, file=sys.stderr)):
    """The theory for every cell of a phase family and its boundaries on a finer grid. Solving
    takes seconds, so the optima are cached under cache_dir (as precompute/cache.py: key and
    checksum checked, a bad entry reported in one line and solved again), keyed on the (p, r)
    pairs, this file and the torch version."""
    cells = family.instances[:family.per_seed]  # seed-major: seed 0's instances are the cells
    p = [1.0 - i.sparsity for i in cells]
    r = [i.importance[1] for i in cells]
    # the figure's cell coordinates (rounded as its table rounds them) span the finer grid
    densities = sorted({round(v, 6) for v in p})
    importances = sorted({round(v, 6) for v in r})
    fine_p = np.geomspace(min(densities), max(densities), 2 * len(densities) - 1)
    fine_r = np.geomspace(min(importances), max(importances), 41)
    P, R = np.meshgrid(fine_p, fine_r, indexing="ij")
    all_p = np.concatenate([p, P.ravel()])
    all_r = np.concatenate([r, R.ravel()])
    key = hashlib.sha256(json.dumps({
        "p": all_p.tolist(), "r": all_r.tolist(), "torch": torch.__version__,
        "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}).encode()).hexdigest()
    path = Path(cache_dir) / f"theory-{family.name}-{key[:16]}.npz"
    w = cache.made(path, key, lambda: {"w": solved(all_p, all_r)}, {"w": (len(all_p), 4)}, log)["w"]
    labels = [classify(v[:2]) for v in w]
    fine = np.array(labels[len(p):]).reshape(P.shape)
    return Theory(labels[:len(p)], w[:len(p)], boundaries(fine_p, fine_r, fine))
