"""What we measure on a trained toy model: its loss on fresh inputs, the neuron-feature Pearson
correlations, and the paper's per-feature geometry (Elhage et al. 2022, sections 2-4)."""
import numpy as np
import torch

from precompute import toy_model
from precompute.train import Batch, family_seed

EVAL_CHUNK = 4096
REPRESENTED = 0.5  # ||W_i|| above this counts as represented (trained norms sit near 0 or 1)


def evaluate(family, W, b, samples, device="cpu", purpose="eval", unit=None):
    """Final loss (I,) and neuron-feature correlations (I, m, n_max) at each model's own
    sparsity. Pearson r is 0 where a neuron or feature has no variance.

    An all-zero input has h = 0 and a loss fixed by b alone, so both the loss and the moments
    behind r are that closed-form zero-input part plus P(any active) times their mean over
    `samples` inputs drawn given that some feature is active. At S = 0.999 and n = 20, 98% of
    plain draws are all zero: conditioning spends every sample where models differ, and cuts the
    noise about sevenfold there. Every instance sees the same uniforms (common random numbers),
    so the seeds of one grid point are compared on identical inputs: the noise of their loss
    differences, which decide the best seed, is far below that of each loss on its own."""
    batch = Batch(family, device, unit)
    W, b = torch.from_numpy(W).to(device), torch.from_numpy(b).to(device).unsqueeze(2)
    gen = torch.Generator(device).manual_seed(family_seed(family.name, purpose))
    if family.input_law != "independent":
        return _evaluate_drawn(batch, W, b, gen, samples)
    I, m, n = W.shape
    groups = _same_inputs(batch)
    loss = torch.zeros(I, dtype=torch.float64)
    corrs = [Correlation() for _ in groups]
    r = torch.empty(1, n, EVAL_CHUNK, device=device)  # one draw for every instance
    u = torch.empty(1, 1, EVAL_CHUNK, device=device)
    chunks = max(1, samples // EVAL_CHUNK)
    for _ in range(chunks):
        r.uniform_(generator=gen)
        u.uniform_(generator=gen)
        for (idx, inv_p, count), corr in zip(groups, corrs):
            x, _ = toy_model.sample_inputs_given_any(r, u, inv_p, count)  # (1, n, B), shared
            Wg = W[idx]
            h = toy_model.hidden(Wg, x, batch.hidden_relu)
            loss[idx.cpu()] += _loss(Wg, b[idx], x, h, batch.importance[idx], batch.n[idx],
                                     batch.relu)
            corr.add(h, x)
    zero = toy_model.loss(W, b, torch.zeros(I, n, 1, device=device), batch.importance, batch.n,
                          batch.relu, batch.hidden_relu).double().cpu()
    any_active = 1.0 - (1.0 - 1.0 / batch.inv_p.flatten(0, 1)[:, 0, 0].double().cpu()) \
        ** batch.n.double().cpu()
    final = (1 - any_active) * zero + any_active * loss / chunks
    # the zero input adds nothing to the moments (x = h = 0): they scale by P(any active)
    out = np.zeros((I, m, n), np.float32)
    for (idx, _, _), corr in zip(groups, corrs):
        out[idx.cpu().numpy()] = corr.result(any_active[idx.cpu()])
    return final.float().numpy(), out


def _loss(W, b, x, h, importance, n, relu):
    """toy_model.loss (I,) in float64 on the CPU, given h; its passes over x' - x fused into one
    there (kernels.weighted_sq_error)."""
    if not x.is_cpu:
        return toy_model.loss(W, b, x, importance, n, relu, h=h).double().cpu()
    from precompute import kernels  # numba: imported only where an evaluation runs
    z = toy_model.reconstruct(W, b, x, relu=False, h=h)  # before the output ReLU
    out = np.empty(len(W))
    kernels.weighted_sq_error(z.numpy(), x.numpy(), importance[..., 0].numpy(), relu, out)
    return torch.from_numpy(out) / (x.shape[2] * n.double())


def _same_inputs(batch):
    """The instances that see the same evaluation inputs, which depend only on an instance's
    density and feature count: (instances, 1/p (1, n_max, 1), n (1,)) per group. Drawing x once
    per group (phase: 16 groups of 80 instances in each of its two units) and sharing it makes
    evaluation several times cheaper than one x per instance, on the same numbers."""
    inv_p, count = batch.inv_p.flatten(0, 1), batch.n
    keys = [(float(inv_p[k, 0, 0]), float(count[k])) for k in range(len(count))]
    groups = []
    for key in sorted(set(keys)):
        idx = torch.tensor([k for k, v in enumerate(keys) if v == key], device=count.device)
        groups.append((idx, inv_p[idx[:1]], count[idx[:1]]))
    return groups


def _evaluate_drawn(batch, W, b, gen, samples):
    """evaluate() for the correlated and anticorrelated input laws, which draw through
    Batch.set_inputs (train.SetDraws): plain draws, every seed on the same inputs."""
    I, m, n = W.shape
    loss, corr = torch.zeros(I, dtype=torch.float64), Correlation()
    x = torch.empty(I, n, EVAL_CHUNK, device=W.device)
    chunks = max(1, samples // EVAL_CHUNK)
    for _ in range(chunks):
        batch.set_inputs(gen, x)
        loss += toy_model.loss(W, b, x, batch.importance, batch.n, batch.relu,
                               batch.hidden_relu).double().cpu()
        corr.add(toy_model.hidden(W, x, batch.hidden_relu), x)
    return (loss / chunks).float().numpy(), corr.result()


class Correlation:
    """Pearson r between hidden units h (I, m, B) and features x (I, n, B), or x (1, n, B) shared
    by all instances, accumulated over batches in float64; 0 where a unit or a feature has no
    variance."""

    def __init__(self):
        self.N, self.sums = 0, None

    def add(self, h, x):
        # each batch's sums in float32 (torch sums in blocks, so their error stays near float
        # rounding), accumulated across batches in float64
        if x.shape[0] == 1 < h.shape[0]:
            hx = (h.flatten(0, 1) @ x[0].T).view(*h.shape[:2], x.shape[1])
        else:
            hx = torch.bmm(h, x.transpose(1, 2))
        s = tuple(t.double().cpu() for t in (x.sum(2), (x * x).sum(2), h.sum(2), (h * h).sum(2),
                                             hx))
        self.sums = s if self.sums is None else tuple(a + b for a, b in zip(self.sums, s))
        self.N += x.shape[2]

    def result(self, weight=None):
        """r from the accumulated sums; `weight` (I,), if given, scales each instance's means
        (the share of all inputs that the accumulated ones stand for)."""
        N = self.N
        mean = (lambda s: s / N) if weight is None else \
            (lambda s: s * (weight / N).view(-1, *[1] * (s.dim() - 1)))
        sx, sxx, sh, shh, shx = self.sums
        cov = mean(shx) - mean(sh).unsqueeze(2) * mean(sx).unsqueeze(1)
        sd_h = (mean(shh) - mean(sh) ** 2).clamp_min(0).sqrt().unsqueeze(2)
        sd_x = (mean(sxx) - mean(sx) ** 2).clamp_min(0).sqrt().unsqueeze(1)
        denom = sd_h * sd_x
        corr = torch.where(denom > 1e-12, cov / denom.clamp_min(1e-12), torch.zeros_like(cov))
        return corr.float().numpy()


def geometry(W):
    """Per-feature geometry of one model, W of shape (m, n):
    norm ||W_i||; superposition sum_{j!=i} (W^_i . W_j)^2; dimensionality
    D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2; dims per feature m / ||W||_F^2."""
    W = np.asarray(W, dtype=np.float64)
    norms = np.linalg.norm(W, axis=0)
    live = norms > 1e-6
    W_hat = np.where(live, W / np.where(live, norms, 1.0), 0.0)
    overlap2 = (W_hat.T @ W) ** 2  # [i, j] = (W^_i . W_j)^2
    total = overlap2.sum(axis=1)
    frob2 = float((W ** 2).sum())
    return {
        "norm": norms,
        "superposition": total - np.diag(overlap2),
        "dimensionality": np.where(live, norms ** 2 / np.where(live, total, 1.0), 0.0),
        "dims_per_feature": W.shape[0] / frob2 if frob2 > 0 else 0.0,
    }


def participation_ratio(corr):
    """How many features a neuron responds to, per neuron: (sum_i r_i^2)^2 / sum_i r_i^4.
    1 for a neuron tied to a single feature, k for one spread evenly over k features."""
    c2 = np.asarray(corr, dtype=np.float64) ** 2
    num, den = c2.sum(axis=-1) ** 2, (c2 ** 2).sum(axis=-1)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
