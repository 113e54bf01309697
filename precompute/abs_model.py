"""The paper's model of computation in superposition (Elhage et al. 2022, "Computation in
Superposition"), batched over instances:

    h  = ReLU(W1 x)            W1: m x n, no hidden bias (as the paper)
    y' = ReLU(W2 h + b)        W2: n x m, untied from W1
    L  = mean over batch and features of  I_i (|x_i| - y'_i)^2

Inputs: x_i = 0 with probability S, else uniform on [-1, 1]. As for the toy model (train.py), one
uniform r per entry and seed, shared by that seed's grid points: x = 2 r / p - 1 where r < p.

The model needs its hidden ReLU (|x| = ReLU(x) + ReLU(-x)), so neurons mean something here.
A different model from toy_model.py with its own trainer: gradients by hand (as the toy model's),
AdamW (train.adamw), every grid point of a family in one batched tensor.
"""
import math

import numpy as np
import torch
from tqdm import tqdm

from precompute.metrics import Correlation
from precompute.train import Batch, SortedDraws, adamw, check_finite, family_seed

EVAL_CHUNK = 4096
# feature_errors below BOTH_SIGNS: |x_i| computed; below ONE_SIGN: one sign of x_i only
BOTH_SIGNS, ONE_SIGN = 0.25, 0.75


def inputs(r, inv_p):
    """x from uniforms r (broadcast over grid points) and per-feature 1/p; padding never fires."""
    u = r * inv_p
    return torch.where(u < 1, 2 * u - 1, torch.zeros(()))


def forward(W1, W2, b, x):
    return torch.relu(torch.baddbmm(b, W2, torch.relu(torch.bmm(W1, x))))


def loss(W1, W2, b, x, importance, n):
    """Per-instance loss (I,), over each instance's own n features."""
    err = importance * (forward(W1, W2, b, x) - x.abs()) ** 2
    return err.sum(dim=(1, 2)) / (x.shape[2] * n)


def loss_and_grad(W1, W2, b, x, coef, importance=None, n=None):
    """The loss differentiated by hand into W1.grad, W2.grad, b.grad (about 10 passes over the
    (n x batch) entries against about 25 for autograd; tested against it). With coef = 2 I / (B n)
    per feature, e = y' - |x| and g = coef e [z > 0] for z = W2 h + b:
      dW2 = g h^T,  db = sum_batch g,  dW1 = ((W2^T g) [W1 x > 0]) x^T.
    Returns the per-instance loss when importance and n are given."""
    a = torch.bmm(W1, x)
    h = torch.relu(a)
    z = torch.baddbmm(b, W2, h)
    e = torch.relu(z).sub_(x.abs())
    value = None
    if importance is not None:
        value = (e * e * importance).sum(dim=(1, 2)) / (x.shape[2] * n)
    g = torch.ops.aten.threshold_backward(e, z, 0.0).mul_(coef)
    torch.bmm(g, h.transpose(1, 2), out=W2.grad)
    torch.sum(g, dim=2, keepdim=True, out=b.grad)
    dh = torch.ops.aten.threshold_backward(torch.bmm(W2.transpose(1, 2), g), a, 0.0)
    torch.bmm(dh, x.transpose(1, 2), out=W1.grad)
    return value


def init_weights(batch):
    """Xavier-normal W1 (Batch.init_weights, the toy model's draws) and W2 (its own draws), zero
    bias; padding features keep zero weights."""
    fam = batch.family
    W1, b = batch.init_weights()
    W2 = torch.zeros(len(fam.instances), fam.n_max, fam.m)
    for seed in range(fam.seeds):
        gen = torch.Generator().manual_seed(family_seed(fam.name, f"init-out/{seed}"))
        for k, i in enumerate(fam.instances):
            if i.seed == seed:
                W2[k, :i.n] = torch.randn(i.n, fam.m, generator=gen) * math.sqrt(2.0 / (fam.m + i.n))
    return W1, W2.to(batch.device), b


def train_family(family, cfg, device="cpu", progress=True):
    """Train all instances; returns numpy W (I, m, n_max) = W1, W2 (I, n_max, m), b (I, n_max),
    loss_curve (I, steps // log_every) and curve_steps, as train.train_family does."""
    batch = Batch(family, device)
    opt, params = adamw(init_weights(batch), cfg, device)
    coef = 2.0 * batch.importance / (cfg.batch_size * batch.n.view(-1, 1, 1))
    gen = torch.Generator(device).manual_seed(family_seed(family.name, "data"))
    r = torch.empty(family.seeds, 1, family.n_max, cfg.batch_size, device=device)
    step_compiled = compiled(batch, params, coef, r) if r.is_cpu else None
    curve, curve_steps = [], []
    for step in tqdm(range(1, cfg.steps + 1), desc=f"train {family.name}", disable=not progress,
                     mininterval=1.0, leave=False):
        log = step % cfg.log_every == 0 or step == cfg.steps
        r.uniform_(generator=gen)
        if step_compiled:
            per = step_compiled()
        else:
            x = inputs(r, batch.inv_p).flatten(0, 1)
            per = loss_and_grad(*params, x, coef, *((batch.importance, batch.n) if log else ()))
        opt.step()
        if log:
            check_finite(family, per, step)
            curve.append(per.cpu())
            curve_steps.append(step)
    W1, W2, b = (p.cpu().numpy() for p in params)
    return {"W": W1, "W2": W2, "b": b.squeeze(2), "loss_curve": torch.stack(curve, 1).numpy(),
            "curve_steps": np.array(curve_steps)}


def compiled(batch, params, coef, r):
    """loss_and_grad as kernels.abs_loss_and_grad on the CPU, for the uniforms r drawn afresh
    before each call: a function that writes the gradients and returns the loss (I,)."""
    from precompute import kernels  # numba compiles on first use: only where it runs
    I, n_max = len(batch.idx), batch.family.n_max
    flat = lambda t: t.reshape(I, n_max).numpy()
    draws = SortedDraws(batch, r.squeeze(1).numpy(), (0, n_max))
    weights = (params[0].detach().numpy(), params[1].detach().numpy(), flat(params[2].detach()))
    loss = np.empty(I, np.float32)
    rest = (flat(batch.inv_p), flat(coef), flat(batch.importance), batch.n.numpy().astype(np.int64),
            *(p.grad.numpy() for p in params[:2]), flat(params[2].grad), loss)

    def step():
        kernels.abs_loss_and_grad(*weights, *draws.sort(), *rest)
        return torch.from_numpy(loss.copy())
    return step


def evaluate(family, arrays, samples, device="cpu"):
    """Final loss (I,) on `samples` fresh inputs, the same for every instance (paired, so the
    best seed is chosen on differences), and the neuron-feature Pearson r (I, m, n_max)."""
    batch = Batch(family, device)
    W1, W2, b = (torch.from_numpy(arrays[k]).to(device) for k in ("W", "W2", "b"))
    b = b.unsqueeze(2)
    gen = torch.Generator(device).manual_seed(family_seed(family.name, "eval"))
    r = torch.empty(1, 1, family.n_max, EVAL_CHUNK, device=device)
    chunks, total, corr = max(1, samples // EVAL_CHUNK), 0.0, Correlation()
    with torch.no_grad():
        for _ in range(chunks):
            x = inputs(r.uniform_(generator=gen), batch.inv_p).flatten(0, 1)
            total = total + loss(W1, W2, b, x, batch.importance, batch.n).double().cpu()
            corr.add(torch.relu(torch.bmm(W1, x)), x)
    return (total / chunks).float().numpy(), corr.result()


def feature_errors(W1, W2, b, points=201):
    """Per feature i of one model (W1 m x n, W2 n x m, b n): how well y'_i computes |t| for
    x = t e_i, t on a grid over [-1, 1], as mean (y'_i(t) - y'_i(0) - |t|)^2 / mean t^2. What
    y'_i outputs at t = 0 is subtracted: a constant (dense models output the mean, 0.5, for a
    feature they drop) computes nothing. Both signs computed score near 0, one sign only (a
    single ReLU neuron) about 0.5, nothing 1."""
    t = np.linspace(-1.0, 1.0, points)
    h = np.maximum(W1[:, :, None] * t, 0.0)  # (m, n, t): the neurons for x = t e_i
    y = np.maximum(np.einsum("im,mit->it", W2, h) + b[:, None], 0.0)
    y -= np.maximum(b, 0.0)[:, None]  # y'_i at t = 0, where every neuron is off
    return ((y - np.abs(t)) ** 2).mean(axis=1) / (t ** 2).mean()
