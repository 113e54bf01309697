"""Sparse autoencoders on a toy model's hidden activations h = W x, and how well they recover the
toy model's true feature directions W_i.

    f  = ReLU(W_e (h - b_d) + b_e)       codes, one per dictionary latent
    h' = W_d f + b_d                     W_d has unit-norm columns (renormalised every step)
    L  = mean ||h - h'||^2 + lambda * mean ||f||_1

One batch per dictionary size trains every SAE of a sweep with that size: target model x lambda;
the stored decoders are zero-padded to the largest size.
"""
import hashlib
import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from errors import BuildError
from precompute import cache, toy_model
from precompute.metrics import REPRESENTED
from precompute.models import lowest_loss
from precompute.train import family_seed, one_thread


@dataclass
class TrainedSAEs:
    sweep: object  # config.SAESweep
    rows: list  # one dict per SAE: target, sparsity, dict_size, l1 and the metrics
    arrays: dict  # W_d (I, m, d_max), true_unit (T, m, n) and true_norm (T, n) of the targets
    key: str
    from_cache: bool

    def __len__(self):
        return len(self.rows)

    def records(self):
        """One record per SAE: its settings, scores and decoder columns (m x dict_size)."""
        return [{**row, "W_d": self.arrays["W_d"][k][:, :row["dict_size"]].tolist()}
                for k, row in enumerate(self.rows)]


def settings(sweep):
    return list(itertools.product(sweep.sparsities, sweep.dict_sizes, sweep.l1))


def targets(sweep, toy):
    """Index of the lowest-loss toy model for each target sparsity."""
    best = {}
    for k in lowest_loss(toy):
        inst = toy.family.instances[k]
        if inst.n == sweep.n:
            best[inst.sparsity] = k
    return [best[s] for s in sweep.sparsities]


class Params:
    """SAEs of one dictionary size as batched tensors: W_eb = [W_e | b_e] (I, d, m+1), so that one
    matrix product with [h - b_d ; 1] gives the pre-activations, W_d (I, m, d), b_d (I, m, 1)."""

    def __init__(self, W_d, b_d):
        self.W_d, self.b_d = W_d, b_d
        self.W_eb = torch.cat([W_d.transpose(1, 2), torch.zeros_like(W_d[:, :1]).transpose(1, 2)],
                              2)  # tied init
        for p in self.tensors():
            p.grad = torch.zeros_like(p)

    def tensors(self):
        return [self.W_eb, self.W_d, self.b_d]

    def codes(self, h):
        u = torch.cat([h - self.b_d, torch.ones_like(h[:, :1])], 1)
        return torch.relu(torch.bmm(self.W_eb, u)), u

    def loss_and_grad(self, h, l1):
        """Gradients of the sum over SAEs of mean ||h - h'||^2 + l1 mean ||f||_1, by hand, into
        the tensors' .grad (autograd's broadcasts make three times the passes over (d x batch)).
        With G = 2 (h' - h) / B:  dW_d = G f^T,  df = W_d^T G + l1 / B,  da = df [f > 0],
        [dW_e | db_e] = da [u ; 1]^T,  db_d = sum_batch G - W_e^T db_e."""
        batch, m = h.shape[2], h.shape[1]
        f, u = self.codes(h)
        G = torch.baddbmm(self.b_d - h, self.W_d, f).mul_(2.0 / batch)
        torch.bmm(G, f.transpose(1, 2), out=self.W_d.grad)
        df = torch.baddbmm((l1 / batch).view(-1, 1, 1), self.W_d.transpose(1, 2), G)
        da = torch.ops.aten.threshold_backward(df, f, 0.0)  # f > 0 exactly where a > 0
        torch.bmm(da, u.transpose(1, 2), out=self.W_eb.grad)
        db_e = self.W_eb.grad[:, :, m:]
        torch.sub(G.sum(2, keepdim=True), torch.bmm(self.W_eb[:, :, :m].transpose(1, 2), db_e),
                  out=self.b_d.grad)


def train(sweep, toy, cfg, device="cpu"):
    fam = toy.family
    tk = targets(sweep, toy)
    W_true = torch.stack([torch.from_numpy(toy.model(k)[0]) for k in tk]).to(device)  # (T, m, n)
    m, n = W_true.shape[1:]
    rows = settings(sweep)
    t_index = torch.tensor([sweep.sparsities.index(s) for s, _, _ in rows], device=device)
    d_max, I = max(sweep.dict_sizes), len(rows)
    l1 = torch.tensor([lam for _, _, lam in rows], device=device)
    gen = torch.Generator().manual_seed(family_seed(fam.name, "sae/init"))
    W_d = torch.randn(I, m, d_max, generator=gen).to(device)  # each SAE uses its first d columns
    W_d /= W_d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    inv_p = torch.tensor([1 / (1 - s) for s in sweep.sparsities], device=device).view(-1, 1, 1)

    def hidden(batch, g):
        x = toy_model.sample_inputs(torch.rand(len(tk), n, batch, generator=g, device=device), inv_p)
        return torch.bmm(W_true, x)  # (T, m, batch), each target's h

    # One batch per dictionary size: padding every dictionary to the largest one (d = 40 for
    # d = 5) would spend most of a step on masked-off latents. Every size trains on the same
    # data, drawn once per step.
    sizes = []
    for d in sorted(set(sweep.dict_sizes)):
        idx = torch.tensor([i for i, (_, size, _) in enumerate(rows) if size == d], device=device)
        sae = Params(W_d[idx, :, :d].contiguous(), torch.zeros(len(idx), m, 1, device=device))
        sizes.append((d, idx, sae, torch.optim.Adam(sae.tensors(), lr=cfg.learning_rate,
                                                   fused=True)))
    data = torch.Generator(device).manual_seed(family_seed(fam.name, "sae/data"))
    for _ in range(cfg.steps):
        h = hidden(cfg.batch_size, data)
        for d, idx, sae, opt in sizes:
            sae.loss_and_grad(h[t_index[idx]], l1[idx])
            opt.step()
            sae.W_d /= sae.W_d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    fvu, l0, dead = torch.empty(I), torch.empty(I), torch.empty(I)
    with torch.no_grad():  # evaluate on fresh inputs
        h_eval = hidden(cfg.eval_samples, torch.Generator(device).manual_seed(
            family_seed(fam.name, "sae/eval")))
        for d, idx, sae, _ in sizes:
            h = h_eval[t_index[idx]]
            f = sae.codes(h)[0]
            err = h - torch.baddbmm(sae.b_d, sae.W_d, f)
            spread = (h - h.mean(2, keepdim=True)).pow(2).sum((1, 2))
            fvu[idx.cpu()] = (err.pow(2).sum((1, 2)) / spread).cpu()
            l0[idx.cpu()] = (f > 0).float().sum(1).mean(1).cpu()
            dead[idx.cpu()] = ((f > 0).sum(2) == 0).float().sum(1).cpu()
            W_d[idx] = 0.0
            W_d[idx, :, :d] = sae.W_d
    W_true = W_true.cpu().numpy()
    norms = np.linalg.norm(W_true, axis=1)  # (T, n)
    true_unit = W_true / np.maximum(norms[:, None, :], 1e-12)
    W_d_np = W_d.cpu().numpy()
    out = []
    for i, (s, d, lam) in enumerate(rows):
        t = sweep.sparsities.index(s)
        represented = norms[t] > REPRESENTED
        match = recovery(true_unit[t], represented, W_d_np[i, :, :d])
        out.append({"target": f"{fam.name}/{tk[t]}", "sparsity": s, "dict_size": d, "l1": lam,
                    "represented": int(represented.sum()), **match,
                    "l0": float(l0[i]), "dead_fraction": float(dead[i]) / d,
                    "fvu": float(fvu[i])})
        check_finite(out[-1], W_d_np[i])
    return out, {"W_d": W_d_np, "true_unit": true_unit, "true_norm": norms}


def check_finite(row, W_d):
    """A diverged SAE (NaN or infinite weights or metrics) is a build error naming its sweep
    point, as train.check_finite does for the toy models, never a site saying "MMCS of nan"."""
    if not (np.isfinite(W_d).all() and all(np.isfinite(v) for v in row.values()
                                            if isinstance(v, float))):
        raise BuildError(f"grid [sae.{row['target'].split('/')[0]}]",
                         f"sparse autoencoder training diverged for {row['target']} "
                         f"dict_size={row['dict_size']} l1={row['l1']:g}",
                         "lower [sae_train] learning_rate or check that sweep point")


def recovery(true_unit, represented, dictionary):
    """Mean max cosine similarity (MMCS) between the represented true directions and the unit
    dictionary columns, and the share of them matched above 0.9."""
    cos = true_unit[:, represented].T @ dictionary  # (features, latents)
    best = cos.max(axis=1)
    return {"mmcs": float(best.mean()), "recovered": float((best > 0.9).mean())}


def code_hash():
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def trained_saes(sweep, toy, cfg, device, cache_dir, log=print):
    key = hashlib.sha256(json.dumps({"sweep": asdict(sweep), "cfg": asdict(cfg), "toy": toy.key,
                                     "code": code_hash(), "device": device},
                                    sort_keys=True).encode()).hexdigest()
    path = Path(cache_dir) / f"sae-{sweep.family}-{key[:16]}.npz"
    try:
        arrays = cache.load(path, key)
        rows = json.loads(str(arrays.pop("rows")))
        return TrainedSAEs(sweep, rows, arrays, key, True)
    except cache.CacheMiss as miss:
        if path.exists():
            log(str(miss))
    with one_thread():  # its bytes must not depend on the machine's cores, as the models'
        rows, arrays = train(sweep, toy, cfg, device)
    cache.save(path, key, {**arrays, "rows": np.array(json.dumps(rows))})
    return TrainedSAEs(sweep, rows, arrays, key, False)
