"""Trained models for every family of the grid, from the cache or freshly trained, and their
weight tables (data/models/<family>.json: one record per model)."""
import ctypes
import hashlib
import importlib.metadata
import json
import multiprocessing
import os
import signal
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from errors import BuildError
from precompute import abs_model, cache, metrics, train
from precompute.train import snapshot_steps

# The code whose change must retrain: the model, the trainer, the grid expansion, the evaluation,
# the jobs that run them (this module); the absolute-value model's own module only for its families.
TRAINING_CODE = [Path(__file__).with_name(f) for f in
                 ("config.py", "toy_model.py", "kernels.py", "train.py", "metrics.py", "models.py")]
MODEL_CODE = {"toy": [], "absolute-value": [Path(abs_model.__file__)]}


def code_hash(model="toy"):
    h = hashlib.sha256()
    for path in TRAINING_CODE + MODEL_CODE[model]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def cache_key(family, train_cfg, device):
    blob = json.dumps({"family": family.name, "spec": family.spec, "train": asdict(train_cfg),
                       "code": code_hash(family.model), "device": device, "torch": torch.__version__,
                       "numpy": np.__version__, "numba": importlib.metadata.version("numba")},
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
    return trained_families({family.name: family}, train_cfg, device, cache_dir, progress,
                            log)[family.name]


def trained_families(families, train_cfg, device, cache_dir, progress=True, log=print,
                     workers=None, then=lambda name, trained: None):
    """Every family (name -> Trained), from the cache where it can be, else trained. The units
    (train.units) of all families to train go to one pool of `workers` processes (default: one
    per core; none on a GPU), one thread each, the largest first, so that every core stays busy
    until the end; each family is checked and saved as soon as its last unit is in. A unit's
    bytes are the same whichever process trains it. then(name, trained) runs in this process as
    each family is ready (what depends on it, e.g. its sparse autoencoders), while the pool goes
    on with the rest."""
    started, out, todo = time.perf_counter(), {}, {}
    for name, family in families.items():
        key = cache_key(family, train_cfg, device)
        path = entry_path(family, key, cache_dir)
        try:
            out[name] = cached(family, train_cfg, key, path)
            log(f"{name}: {len(family.instances)} models (cache)")
        except cache.CacheMiss as miss:
            if path.exists() or path.is_symlink():  # a missing entry is normal; a bad one is not
                log(str(miss))
            todo[name] = unit_jobs(family, train_cfg, device)
    jobs = sorted((job for js in todo.values() for job in js), key=lambda j: -j.cost)
    parts = {name: [None] * len(js) for name, js in todo.items()}
    if workers is None:
        workers = 0 if device != "cpu" else cores()
    workers = min(workers, len(jobs))
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), worker_init) \
        if workers > 1 else None
    try:  # the pool takes the jobs in the order given: largest first
        results = (f.result() for f in as_completed([pool.submit(run_job, j) for j in jobs])) \
            if pool else map(run_job, jobs)
        for name in list(out):  # from the cache
            then(name, out[name])
        for job, arrays in tqdm(results, total=len(jobs), desc="train", leave=False,
                                disable=not progress or not jobs, mininterval=1.0):
            parts[job.family.name][job.part] = arrays
            if all(p is not None for p in parts[job.family.name]):
                family = families[job.family.name]
                out[family.name] = save(family, train_cfg, device, cache_dir,
                                        train.merge(parts.pop(family.name)))
                log(f"{family.name}: {len(family.instances)} models (trained in "
                    f"{time.perf_counter() - started:.0f} s since training began"
                    f"{f', {workers} workers' if pool else ''})")
                then(family.name, out[family.name])
        if pool:
            pool.shutdown()  # every unit is in: the workers exit on their own, cleanly
    except BrokenProcessPool:
        raise BuildError(f"grid families {', '.join(parts)}", "a training worker process died "
                         "(killed for lack of memory?)", "free memory, or train fewer or smaller "
                         "grid points at once") from None
    finally:
        if pool:
            stop(pool)
    return {name: out[name] for name in families}


def entry_path(family, key, cache_dir):
    return Path(cache_dir) / f"{family.name}-{key[:16]}.npz"


def cached(family, train_cfg, key, path):
    """The family's Trained from the cache; cache.CacheMiss if it is not there or not usable."""
    T = len(family.instances)
    shapes = {"W": (T, family.m, family.n_max), "b": (T, family.n_max), "final_loss": (T,)}
    if family.model == "absolute-value":
        shapes["W2"] = (T, family.n_max, family.m)
    if family.snapshots:
        K = len(snapshot_steps(train_cfg.steps, family.snapshots))
        shapes.update({"snap_W": (T, K, family.m, family.n_max), "snap_b": (T, K, family.n_max),
                       "snap_loss": (T, K), "snap_steps": (K,)})
    arrays = cache.load(path, key, shapes)
    return Trained(family, arrays, train_cfg.steps, key, True, path.parent)


def save(family, train_cfg, device, cache_dir, arrays):
    key = cache_key(family, train_cfg, device)
    arrays["eval_samples"] = np.array(train_cfg.eval_samples)
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    cache.save(entry_path(family, key, cache_dir), key, arrays)
    return Trained(family, arrays, train_cfg.steps, key, False, Path(cache_dir))


@dataclass
class Job:
    """One unit of one family to train and evaluate; cost: its entries per step, for ordering."""
    family: object
    cfg: object
    unit: object  # train.Unit, or None: the whole family (the absolute-value model)
    part: int
    device: str
    cost: int


def unit_jobs(family, train_cfg, device):
    B = train_cfg.batch_size
    if family.model == "absolute-value":  # its own trainer, whole (m + n entries per column)
        return [Job(family, train_cfg, None, 0, device,
                    len(family.instances) * (family.n_max + family.m) * B)]
    return [Job(family, train_cfg, u, k, device,
                len(u.seeds) * len(u.positions) * family.n_max * B)
            for k, u in enumerate(train.units(family, B))]


def cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def stop(pool):
    """End the pool's workers now, whatever they are doing (an error or an interrupt; after a
    clean shutdown there are none left)."""
    processes = list((pool._processes or {}).values())  # shutdown() forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        p.terminate()
    for p in processes:
        p.join(timeout=10)


def worker_init():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the build's own process handles Ctrl-C
    try:  # Linux: a worker ends with the build even if the build is killed outright
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (AttributeError, OSError):
        pass


def run_job(job):
    """(job, its arrays with final_loss and corr), trained and evaluated on one thread."""
    fam, cfg = job.family, job.cfg
    with train.one_thread():
        if fam.model == "absolute-value":
            arrays = abs_model.train_family(fam, cfg, job.device, progress=False)
            arrays["final_loss"], arrays["corr"] = abs_model.evaluate(
                fam, arrays, cfg.eval_samples, job.device)
        else:
            arrays = train.train_unit(fam, cfg, job.unit, job.device, progress=False)
            arrays["final_loss"], arrays["corr"] = metrics.evaluate(
                fam, arrays["W"], arrays["b"], cfg.eval_samples, job.device, unit=job.unit)
    return job, arrays


def lowest_loss(trained):
    """Index of the lowest-loss seed at each grid point (seed-major instances), shape (per_seed,).
    The paper keeps the best of several fits, since some seeds stick in local minima. This is the
    one place a figure or fact picks a seed; final_loss is a paired evaluation (metrics.evaluate)
    on eval_samples inputs, so the choice does not hinge on evaluation noise (tested)."""
    fam = trained.family
    losses = trained.arrays["final_loss"].reshape(fam.seeds, fam.per_seed)
    return losses.argmin(0) * fam.per_seed + np.arange(fam.per_seed)
