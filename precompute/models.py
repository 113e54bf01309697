"""Trained models for every family of the grid, from the cache or freshly trained, and their
weight tables (data/models/<family>.json: one record per model)."""
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from precompute import abs_model, cache, metrics
from precompute.train import snapshot_steps, train_family

# The code whose change must retrain: the model, the trainer, the grid expansion, the evaluation;
# the absolute-value model's own module only for its families.
TRAINING_CODE = [Path(__file__).with_name(f) for f in
                 ("config.py", "toy_model.py", "train.py", "metrics.py")]
MODEL_CODE = {"toy": [], "absolute-value": [Path(abs_model.__file__)]}


def code_hash(model="toy"):
    h = hashlib.sha256()
    for path in TRAINING_CODE + MODEL_CODE[model]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def cache_key(family, train_cfg, device):
    blob = json.dumps({"family": family.name, "spec": family.spec, "train": asdict(train_cfg),
                       "code": code_hash(family.model), "device": device, "torch": torch.__version__},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Trained:
    family: object  # config.Family
    arrays: dict  # W, b, loss_curve, curve_steps, final_loss, eval_samples, corr (snap_*: Snapshots)
    steps: int
    key: str
    from_cache: bool
    cache_dir: Path  # where its entry lives; products derived from it (phase_theory) cache there too

    def __len__(self):
        return len(self.family.instances)

    def model(self, k):
        """Model k with its padding stripped: W (m, n), b (n,), corr (m, n)."""
        n = self.family.instances[k].n
        a = self.arrays
        return a["W"][k][:, :n], a["b"][k][:n], a["corr"][k][:, :n]

    def records(self):
        """The weight table: one record per model with params, losses, weights and geometry."""
        fam, out = self.family, []
        for k, inst in enumerate(fam.instances):
            W, b, corr = self.model(k)
            geo = metrics.geometry(W)
            out.append({
                "id": f"{fam.name}/{k}",
                "params": {"n": inst.n, "m": fam.m, "sparsity": inst.sparsity,
                           "importance": list(inst.importance), "activation": fam.activation,
                           "hidden_activation": fam.hidden_activation},
                "seed": inst.seed, "steps": self.steps,
                "final_loss": float(self.arrays["final_loss"][k]),
                "W": W.tolist(), "b": b.tolist(),
                **({"W2": self.arrays["W2"][k][:inst.n].tolist()} if "W2" in self.arrays else {}),
                "norm": geo["norm"].tolist(), "superposition": geo["superposition"].tolist(),
                "dimensionality": geo["dimensionality"].tolist(),
                "dims_per_feature": geo["dims_per_feature"],
                "correlation": corr.tolist(),
                "polysemanticity": metrics.participation_ratio(corr).tolist(),
            })
        return out


def trained_family(family, train_cfg, device, cache_dir, progress=True, log=print):
    key = cache_key(family, train_cfg, device)
    path = Path(cache_dir) / f"{family.name}-{key[:16]}.npz"
    try:
        T = len(family.instances)
        shapes = {"W": (T, family.m, family.n_max), "b": (T, family.n_max), "final_loss": (T,)}
        if family.model == "absolute-value":
            shapes["W2"] = (T, family.n_max, family.m)
        if family.snapshots:
            K = len(snapshot_steps(train_cfg.steps, family.snapshots))
            shapes.update({"snap_W": (T, K, family.m, family.n_max), "snap_b": (T, K, family.n_max),
                           "snap_loss": (T, K), "snap_steps": (K,)})
        return Trained(family, cache.load(path, key, shapes), train_cfg.steps, key, True,
                       Path(cache_dir))
    except cache.CacheMiss as miss:
        if path.exists() or path.is_symlink():  # a missing entry is normal; a bad one is worth a line
            log(str(miss))
    if family.model == "absolute-value":
        arrays = abs_model.train_family(family, train_cfg, device, progress)
        arrays["final_loss"], arrays["corr"] = abs_model.evaluate(
            family, arrays, train_cfg.eval_samples, device)
    else:
        arrays = train_family(family, train_cfg, device, progress)
        arrays["final_loss"], arrays["corr"] = metrics.evaluate(
            family, arrays["W"], arrays["b"], train_cfg.eval_samples, device)
    arrays["eval_samples"] = np.array(train_cfg.eval_samples)
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    cache.save(path, key, arrays)
    return Trained(family, arrays, train_cfg.steps, key, False, Path(cache_dir))


def lowest_loss(trained):
    """Index of the lowest-loss seed at each grid point (seed-major instances), shape (per_seed,).
    The paper keeps the best of several fits, since some seeds stick in local minima. This is the
    one place a figure or fact picks a seed; final_loss is a paired evaluation (metrics.evaluate)
    on eval_samples inputs, so the choice does not hinge on evaluation noise (tested)."""
    fam = trained.family
    losses = trained.arrays["final_loss"].reshape(fam.seeds, fam.per_seed)
    return losses.argmin(0) * fam.per_seed + np.arange(fam.per_seed)
