"""Train a family's instances in units (units()), each a single batched model.

Instances are seed-major (config.py), so the inputs come as one uniform draw per seed of a unit,
of shape (seeds, 1, n, batch), broadcast over that seed's grid points (every unit that holds some
of a seed's grid points draws the same numbers from the seed's own generator). Each instance
still sees exactly the paper's input distribution and a fresh batch every step; grid points of
one seed share their random numbers (common random numbers), which makes sweeps smooth and costs
one draw per seed and unit instead of one per instance. Seeds differ in both their initialisation and their data.
"""
import hashlib
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from errors import BuildError
from precompute import toy_model


def family_seed(name, purpose):
    """A stable 63-bit seed for one family and purpose (init, data, eval)."""
    return int.from_bytes(hashlib.sha256(f"{name}/{purpose}".encode()).digest()[:8], "big") >> 1


@dataclass(frozen=True)
class Unit:
    """A block of a family's instances trained as one batch: some seeds x some grid points
    (positions within a seed), seed-major like the family's own instances."""
    seeds: range
    positions: range

    def indices(self, per_seed):
        return [s * per_seed + p for s in self.seeds for p in self.positions]


# A unit holds about this many (instance x feature x batch column) entries per step, at least one
# seed's grid point. Units are cut from the family alone, never from the number of workers, so a
# model's bytes do not depend on the machine that trained it.
UNIT_ENTRIES = 3_000_000


def units(family, batch_size):
    """The family's training units: runs of whole seeds up to UNIT_ENTRIES, or, where one seed
    is larger, equal parts of its grid points."""
    per_seed = family.per_seed
    seed_entries = per_seed * family.n_max * batch_size
    if seed_entries <= UNIT_ENTRIES:
        step = UNIT_ENTRIES // seed_entries
        return [Unit(range(s, min(s + step, family.seeds)), range(per_seed))
                for s in range(0, family.seeds, step)]
    parts = min(per_seed, math.ceil(seed_entries / UNIT_ENTRIES))
    cuts = [round(k * per_seed / parts) for k in range(parts + 1)]
    return [Unit(range(s, s + 1), range(a, b)) for s in range(family.seeds)
            for a, b in zip(cuts, cuts[1:])]


def whole(family):
    return Unit(range(family.seeds), range(family.per_seed))


class Batch:
    """A unit of the family's instances (all of them by default) as padded tensors on one device,
    padded to the family's n_max whatever the unit."""

    def __init__(self, family, device, unit=None):
        self.unit = unit = unit or whole(family)
        self.idx = unit.indices(family.per_seed)
        inst, n_max = [family.instances[k] for k in self.idx], family.n_max
        self.family, self.device = family, device
        self.shape = (len(unit.seeds), len(unit.positions))
        self.n = torch.tensor([i.n for i in inst], dtype=torch.float32, device=device)
        importance = np.zeros((len(inst), n_max, 1), np.float32)
        inv_p = np.full((len(inst), n_max, 1), toy_model.PAD_INV_P, np.float32)
        for k, i in enumerate(inst):
            importance[k, :i.n, 0] = i.importance
            inv_p[k, :i.n, 0] = 1.0 / (1.0 - i.sparsity)
        self.importance = torch.from_numpy(importance).to(device)
        self.inv_p = torch.from_numpy(inv_p).to(device).view(*self.shape, n_max, 1)
        self.relu = family.activation == "relu"
        self.hidden_relu = family.hidden_activation == "relu"

    def set_inputs(self, gen, out):
        """A fresh batch x (instances, n_max, batch) of a correlated or anticorrelated law from
        one draw shared by every instance (the evaluation's)."""
        sets = SetDraws(self.family, 1, out.shape[-1], self.device)
        sets.draw([gen])
        return sets.inputs(slice(None), self.inv_p, out.view(*self.shape, *out.shape[1:]))

    def init_weights(self):
        """Xavier-normal W (as the paper), zero bias; padding columns stay exactly zero. Every
        grid point of a seed draws in turn from the seed's generator, whichever are kept, so a
        model's start does not depend on the unit it is trained in."""
        fam, (seeds, positions) = self.family, (self.unit.seeds, self.unit.positions)
        m, n_max = fam.m, fam.n_max
        W = torch.zeros(len(self.idx), m, n_max)
        for a, seed in enumerate(seeds):
            gen = torch.Generator().manual_seed(family_seed(fam.name, f"init/{seed}"))
            for p in range(fam.per_seed):
                i = fam.instances[seed * fam.per_seed + p]
                w = torch.randn(m, i.n, generator=gen) * math.sqrt(2.0 / (m + i.n))
                if p in positions:
                    W[a * len(positions) + p - positions.start, :, :i.n] = w
        return W.to(self.device), torch.zeros(len(self.idx), n_max, 1, device=self.device)

    def data_generators(self):
        """One generator per seed of the unit, so that a seed's inputs are the same in every unit:
        numpy's PCG64, which fills a float32 array in half the time torch's CPU generator takes
        (its draw was 8-10% of a step at n = 200 and 400)."""
        return [np.random.Generator(np.random.PCG64(family_seed(self.family.name, f"data/{s}")))
                for s in self.unit.seeds]

    def draw(self, r, gens):
        """Fresh uniforms r (seeds, ...) in place, each seed's from its own generator."""
        for row, gen in zip(r, gens):
            uniform_(row, gen)
        return r


def uniform_(t, gen):
    """t filled in place with uniforms on [0, 1) from gen: a numpy Generator (drawn on the CPU,
    then copied where t lives elsewhere) or a torch one."""
    if isinstance(gen, torch.Generator):
        return t.uniform_(generator=gen)
    if t.is_cpu and t.is_contiguous():
        gen.random(out=t.numpy(), dtype=np.float32)
    else:
        t.copy_(torch.from_numpy(gen.random(tuple(t.shape), dtype=np.float32)))
    return t


class SetDraws:
    """The random numbers of the correlated and anticorrelated input laws (config.INPUT_LAWS) for
    `lead` seeds, shared by each seed's grid points like the independent law's draw: per set of
    features one uniform for whether it is active (and, anticorrelated, one for which of its
    features is), per feature one for its value. A separate draw from the independent law's
    single uniform, which must keep its random stream."""

    def __init__(self, family, lead, batch, device):
        self.k, sets = family.set_size, family.n_max // family.set_size
        self.active = torch.empty(lead, 1, sets, batch, device=device)
        self.pick = torch.empty_like(self.active) if family.input_law == "anticorrelated" else None
        self.value = torch.empty(lead, 1, family.n_max, batch, device=device)

    def draw(self, gens):
        """Each seed's uniforms from its own generator (one per leading row)."""
        for k, gen in enumerate(gens):
            for t in (self.active, self.pick, self.value):
                if t is not None:
                    uniform_(t[k], gen)

    def inputs(self, seeds, inv_p, out):
        """x (s, P, n, batch) for a slice of the seeds; inv_p (s, P, n, 1). A set is active with
        probability p = 1 - S (every feature of a set has the same p; padding sets never are)."""
        s, P, n, B = out.shape
        k = self.k
        on = (self.active[seeds] * inv_p[:, :, ::k] < 1).unsqueeze(3).expand(s, P, n // k, k, B)
        if self.pick is not None:
            which = (self.pick[seeds] * k).long().clamp_max(k - 1).unsqueeze(3)
            on = on & (which == torch.arange(k, device=out.device).view(k, 1))
        return torch.mul(on.reshape(s, P, n, B), self.value[seeds], out=out)


# Instances are stepped in chunks of about this many bytes per (n x batch) tensor, so that a step's
# working set stays in cache between its passes (measured 1.1-1.3x per step at n=400, m=30, against
# one chunk; fewer chunks for small families, since each costs a dozen operator calls).
CHUNK_BYTES = 4 << 20


class Trainer:
    """One unit's training state (the whole family by default); step() draws a fresh batch and
    takes one AdamW step."""

    def __init__(self, family, cfg, device="cpu", skip_zero_columns=None, unit=None):
        self.batch = Batch(family, device, unit)
        seeds, per_seed = self.batch.shape
        self.W, self.b = self.batch.init_weights()
        self.W.grad, self.b.grad = torch.zeros_like(self.W), torch.zeros_like(self.b)
        # The fused AdamW is the same update as the loop over tensors, in one pass.
        self.opt = torch.optim.AdamW([self.W, self.b], lr=cfg.learning_rate,
                                     weight_decay=cfg.weight_decay, fused=True)
        self.coef = 2.0 * self.batch.importance / (cfg.batch_size * self.batch.n.view(-1, 1, 1))
        self.gens = self.batch.data_generators()
        self.r = torch.empty(seeds, family.n_max, cfg.batch_size, device=device)
        self.sets = None if family.input_law == "independent" else \
            SetDraws(family, seeds, cfg.batch_size, device)
        per_chunk = CHUNK_BYTES // (4 * family.n_max * cfg.batch_size)
        self.chunks = chunks(seeds, per_seed, per_chunk)
        size = max(sl.stop - sl.start for _, sl in self.chunks)
        self.plan, work = density_chunks(self.batch, self.coef, cfg.batch_size)
        # the skipping path knows only the independent law's all-zero columns
        self.skip = self.sets is None and (work <= SKIP_BELOW if skip_zero_columns is None
                                           else skip_zero_columns)
        if self.skip:
            self.order = torch.cat([c.idx for c in self.plan])
            size = max(size, *(len(c.idx) for c in self.plan))
            self.r_sorted = torch.empty_like(self.r)
            self.dW, self.db = torch.empty_like(self.W), torch.empty_like(self.b)
        self.ws = toy_model.Workspace(size, family.m, family.n_max, cfg.batch_size, device)

    def step(self, want_loss=False):
        """One training step on every instance; returns the per-instance loss if want_loss."""
        if self.skip:
            return self.step_skipping(want_loss)
        if self.sets is None:
            self.batch.draw(self.r, self.gens)
        else:
            self.sets.draw(self.gens)
        bt, inv_p, losses = self.batch, self.batch.inv_p, []
        for seeds, sl in self.chunks:  # seeds: the seed slice whose draws this chunk reads
            k = sl.stop - sl.start
            x = self.ws.x[:k].view(seeds.stop - seeds.start, -1, *self.ws.x.shape[1:])
            chunk_inv_p = inv_p.flatten(0, 1)[sl].view_as(x[..., :1])
            xn = toy_model.sample_negated_inputs(self.r[seeds].unsqueeze(1), chunk_inv_p, x) \
                if self.sets is None else self.sets.inputs(seeds, chunk_inv_p, x).neg_()
            scored = (bt.importance[sl], bt.n[sl]) if want_loss else (None, None)
            losses.append(toy_model.loss_and_grad(
                self.W[sl], self.b[sl], xn.flatten(0, 1), self.coef[sl], self.ws, self.W.grad[sl],
                self.b.grad[sl], bt.relu, *scored, hidden_relu=bt.hidden_relu))
        self.opt.step()
        return torch.cat(losses) if want_loss else None

    def step_skipping(self, want_loss=False):
        """step() without the batch columns that are all zero for an instance: the same draw,
        its columns sorted per seed by min_i r_i (a permutation of the batch changes no mean over
        it), so that an instance of density p needs only the prefix of columns with
        min_i r_i / p < 1; loss_and_grad_prefix adds the rest in closed form."""
        bt, B, losses = self.batch, self.r.shape[2], []
        bt.draw(self.r, self.gens)
        key = self.r.amin(1)
        if key.is_cpu:  # numpy's sort of (seeds x batch) keys was 5x faster than torch's here
            perm = torch.from_numpy(np.argsort(key.numpy(), axis=1))
        else:
            perm = key.argsort(1)
        key = key.gather(1, perm)
        torch.gather(self.r, 2, perm.unsqueeze(1).expand_as(self.r), out=self.r_sorted)
        for c in self.plan:
            # x = r / p is zero where r / p >= 1 (threshold_ below): the same float products
            kept = max(1, int((key[c.seeds] * c.inv_p_min < 1).sum(1).max()))
            I = len(c.idx)
            ws = self.ws.prefix(I, kept)
            x = ws.x.view(c.inv_p.shape[0], c.inv_p.shape[1], -1, kept)
            xn = toy_model.sample_negated_inputs(self.r_sorted[c.seeds, :, :kept].unsqueeze(1),
                                                 c.inv_p, x)
            dW, db = self.dW[:I], self.db[:I]
            scored = (c.importance, c.n) if want_loss else (None, None)
            losses.append(toy_model.loss_and_grad_prefix(
                self.W.index_select(0, c.idx), self.b.index_select(0, c.idx), xn.flatten(0, 1),
                c.coef, ws, dW, db, B, bt.relu, *scored, hidden_relu=bt.hidden_relu))
            self.W.grad.index_copy_(0, c.idx, dW)
            self.b.grad.index_copy_(0, c.idx, db)
        self.opt.step()
        if not want_loss:
            return None
        return torch.empty_like(self.order, dtype=self.W.dtype).index_copy_(
            0, self.order, torch.cat(losses))


# step_skipping is used where its chunks' expected work (entries and fixed costs, below) is at most
# this share of the dense step's: measured with benchmarks/bench_training.py --skip, it paid on
# phase (0.41 of the work: 1.4-1.7x per step) and packing2d (0.71: 1.1x), not on privileged (0.76:
# 0.94-1.05x), where the per-instance matrix products, whose fixed costs do not shrink with the
# columns, are most of the step.
SKIP_BELOW = 0.73
# A chunk's fixed cost (a dozen operator calls) in (instance x feature x column) entries' worth of
# work, for grouping densities into chunks.
CHUNK_OVERHEAD = 50_000


@dataclass
class DensityChunk:
    seeds: slice  # the seeds whose draws it reads
    idx: torch.Tensor  # its instances, seed-major: seeds x positions within a seed
    inv_p_min: float  # 1/p of its densest feature
    inv_p: torch.Tensor  # (seeds, positions, n_max, 1)
    coef: torch.Tensor
    importance: torch.Tensor
    n: torch.Tensor


def density_chunks(batch, coef, columns):
    """Chunks of instances with similar densities, across seeds, for step_skipping: positions
    within a seed (the same grid point for every seed) sorted densest first, cut where the
    expected work of the widest member plus a chunk's fixed cost is least, then split by seeds to
    about CHUNK_BYTES. Returns the chunks and their expected work as a share of the dense step's."""
    seeds, per_seed, n_max = batch.inv_p.shape[:3]
    inv_p = batch.inv_p[0, :, :, 0].amin(1).cpu().numpy()  # the densest feature of each position
    order = np.argsort(inv_p, kind="stable")
    groups = [order[inv_p[order] == v] for v in np.unique(inv_p)]  # one per density, densest first
    # expected columns with any of n_max features active (padding counts: conservative)
    width = [columns * (1 - (1 - 1 / inv_p[g[0]]) ** n_max) for g in groups]

    def cost(a, b):  # groups a..b-1 as one chunk (split by seeds if large)
        entries = seeds * sum(len(g) for g in groups[a:b]) * n_max * width[a]
        return entries + CHUNK_OVERHEAD * max(1, math.ceil(4 * entries / CHUNK_BYTES))
    best, cut = [0.0], [0]
    for b in range(1, len(groups) + 1):
        a = min(range(b), key=lambda a: best[a] + cost(a, b))
        best.append(best[a] + cost(a, b))
        cut.append(a)
    dense = seeds * per_seed * n_max * columns
    work = best[-1] / (dense + CHUNK_OVERHEAD * max(1, math.ceil(4 * dense / CHUNK_BYTES)))
    spans, b = [], len(groups)
    while b:
        spans.append((cut[b], b))
        b = cut[b]
    out = []
    for a, b in reversed(spans):
        pos = torch.as_tensor(np.sort(np.concatenate(groups[a:b])), device=batch.inv_p.device)
        bytes_per_seed = 4 * len(pos) * n_max * width[a]
        step = max(1, int(CHUNK_BYTES // bytes_per_seed))
        for s in range(0, seeds, step):
            sl = slice(s, min(s + step, seeds))
            idx = (torch.arange(sl.start, sl.stop, device=pos.device).view(-1, 1) * per_seed
                   + pos).flatten()
            out.append(DensityChunk(sl, idx, float(inv_p[groups[a][0]]),
                                    batch.inv_p[sl][:, pos], coef[idx], batch.importance[idx],
                                    batch.n[idx]))
    return out, work


def chunks(seeds, per_seed, size):
    """Instance slices of about `size` instances (at least 1) that never straddle a seed: either
    runs of whole seeds or pieces of one seed. Each comes with the slice of seeds it reads."""
    if size >= per_seed:
        step = size // per_seed
        return [(slice(s, min(s + step, seeds)), slice(s * per_seed, min(s + step, seeds) * per_seed))
                for s in range(0, seeds, step)]
    size = max(1, size)
    return [(slice(s, s + 1), slice(s * per_seed + a, s * per_seed + min(a + size, per_seed)))
            for s in range(seeds) for a in range(0, per_seed, size)]


def train_family(family, cfg, device="cpu", progress=True):
    """Train all of a family's instances, unit by unit (as a pool of workers would, with the same
    bytes); returns numpy arrays W (I, m, n_max), b (I, n_max), loss_curve (I, steps //
    log_every), with its steps, and the family's Snapshots if it asks."""
    return merge([train_unit(family, cfg, u, device, progress)
                  for u in units(family, cfg.batch_size)])


def train_unit(family, cfg, unit, device="cpu", progress=True):
    """train_family's arrays for one unit's instances, trained on one thread (a model's bytes
    must not depend on how many cores the machine has)."""
    with one_thread():
        trainer = Trainer(family, cfg, device, unit=unit)
        snaps = Snapshots(trainer, cfg.steps, family.snapshots) if family.snapshots else None
        curve, curve_steps = [], []
        for step in tqdm(range(1, cfg.steps + 1), desc=f"train {family.name}",
                         disable=not progress, mininterval=1.0, leave=False):
            log = step % cfg.log_every == 0 or step == cfg.steps
            loss = trainer.step(want_loss=log or snaps is not None)
            if snaps:
                snaps.record(step, loss)
            if log:
                check_finite(family, loss, step, trainer.batch.idx)
                curve.append(loss.cpu())
                curve_steps.append(step)
    return {"W": trainer.W.cpu().numpy(), "b": trainer.b.squeeze(2).cpu().numpy(),
            "loss_curve": torch.stack(curve, 1).numpy(), "curve_steps": np.array(curve_steps),
            **(snaps.arrays() if snaps else {})}


# arrays shared by all instances rather than one row per instance
SHARED = ("curve_steps", "snap_steps")


def merge(parts):
    """Units' arrays (in unit order, which is seed-major instance order) as one family's."""
    return {k: parts[0][k] if k in SHARED else np.concatenate([p[k] for p in parts])
            for k in parts[0]}


@contextmanager
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def snapshot_steps(steps, num):
    """About num log-spaced steps from 1 to steps (rounding merges some of the early ones)."""
    return np.unique(np.round(np.geomspace(1, steps, num)).astype(np.int64))


class Snapshots:
    """W and b after each of the log-spaced snapshot_steps, for the learning-dynamics figure, with
    the mean training loss over the steps since the previous snapshot: one batch's loss is too
    noisy to show a plateau, and the mean keeps the curve made of training losses only."""

    def __init__(self, trainer, steps, num):
        self.trainer, self.steps = trainer, snapshot_steps(steps, num)
        self.due = set(self.steps.tolist())
        self.W, self.b, self.loss, self.total, self.count = [], [], [], 0.0, 0

    def record(self, step, loss):
        self.total, self.count = self.total + loss.double().cpu(), self.count + 1
        if step in self.due:
            self.W.append(self.trainer.W.detach().cpu().clone())
            self.b.append(self.trainer.b.detach().squeeze(2).cpu().clone())
            self.loss.append(self.total / self.count)
            self.total, self.count = 0.0, 0

    def arrays(self):
        """snap_W (I, K, m, n_max), snap_b (I, K, n_max), snap_loss (I, K), snap_steps (K,)."""
        return {"snap_W": torch.stack(self.W, 1).numpy(), "snap_b": torch.stack(self.b, 1).numpy(),
                "snap_loss": torch.stack(self.loss, 1).float().numpy(), "snap_steps": self.steps}


def check_finite(family, loss, step, idx=None):
    """A BuildError naming the grid point of the first non-finite loss; idx maps the loss's rows
    to the family's instances (a unit's)."""
    bad = (~torch.isfinite(loss)).nonzero().flatten()
    if len(bad):
        i = family.instances[int(bad[0]) if idx is None else idx[int(bad[0])]]
        raise BuildError(f"grid family '{family.name}'",
                         f"training diverged (loss {float(loss[bad[0]])}) at step {step} for "
                         f"seed={i.seed} n={i.n} sparsity={i.sparsity:g}",
                         "lower [train] learning_rate or check that grid point")
