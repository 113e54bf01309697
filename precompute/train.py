"""Train a family's instances in units (units()), each a single batched model.

Instances are seed-major (config.py), so the inputs come as one uniform draw per seed of a unit,
of shape (seeds, 1, n, batch), broadcast over that seed's grid points (every unit that holds some
of a seed's grid points draws the same numbers from the seed's own generator). Each instance
still sees exactly the paper's input distribution and a fresh batch every step; grid points of
one seed share their random numbers (common random numbers), which makes sweeps smooth and costs
one draw per seed and unit instead of one per instance. Seeds differ in both their initialisation and their data.
"""
import functools
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
# seed's grid point, and at most half of a family's seeds, so that two cores can share any family
# of several seeds (a seed draws its own inputs, so cutting between seeds changes no model's
# bytes). Units are cut from the family alone, never from the number of workers, so a model's
# bytes do not depend on the machine that trained it.
UNIT_ENTRIES = 3_000_000


def units(family, batch_size):
    """The family's training units: runs of whole seeds up to UNIT_ENTRIES and half the seeds,
    or, where one seed is larger, equal parts of its grid points."""
    per_seed = family.per_seed
    seed_entries = per_seed * family.n_max * batch_size
    if seed_entries <= UNIT_ENTRIES:
        step = min(UNIT_ENTRIES // seed_entries, math.ceil(family.seeds / 2))
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
        numpy's PCG64 stream (Stream), which fills a float32 array in a tenth of the time
        torch's CPU generator takes (torch's draw was 8-10% of a step at n = 200 and 400)."""
        return [Stream(family_seed(self.family.name, f"data/{s}")) for s in self.unit.seeds]

    def draw(self, r, gens):
        """Fresh uniforms r (seeds, ...) in place, each seed's from its own generator."""
        for row, gen in zip(r, gens):
            uniform_(row, gen)
        return r


class Stream:
    """The float32 uniforms of np.random.Generator(np.random.PCG64(seed)).random(dtype=float32),
    the same numbers draw after draw, made by a compiled loop (kernels.pcg64_uniforms) that runs
    32 copies of the generator a step apart in vectors: 4.5x as fast as numpy's raw draw (0.85
    against 3.8 ns per 64-bit output) on AVX-512, 1.8x on AVX2 alone. fill takes float32 only."""

    def __init__(self, seed):
        from precompute import kernels  # numba: imported only where a step runs
        self.kernel, mod = kernels.pcg64_uniforms, 1 << 128
        state = np.random.PCG64(seed).state["state"]
        s, inc, a = state["state"], state["inc"], kernels.PCG64_MULT
        a_L, c_L = 1, 0
        for _ in range(kernels.PCG64_LANES):  # L steps at once: s <- a^L s + c_L
            a_L, c_L = a_L * a % mod, (c_L * a + inc) % mod
        halves = lambda v: [v >> 64, v & ((1 << 64) - 1)]
        self.words = np.array(halves(s) + halves(inc) + [0, 0], np.uint64)
        self.consts = np.array(halves(a) + halves(a_L) + halves(c_L), np.uint64)

    def fill(self, a):
        """a (a float32 numpy array) filled in place, in C order."""
        if not a.flags.c_contiguous:  # reshape(-1) would fill a copy
            a[...] = self.fill(np.empty(a.shape, np.float32))
            return a
        self.kernel(self.words, self.consts, a.reshape(-1))
        return a


def uniform_(t, gen):
    """t filled in place with uniforms on [0, 1) from gen: a Stream (drawn on the CPU, then
    copied where t lives elsewhere) or a torch Generator."""
    if isinstance(gen, torch.Generator):
        return t.uniform_(generator=gen)
    if t.is_cpu:
        gen.fill(t.numpy())
    else:
        t.copy_(torch.from_numpy(gen.fill(np.empty(tuple(t.shape), np.float32))))
    return t


class SetDraws:
    """The random numbers of the correlated and anticorrelated input laws (config.INPUT_LAWS) for
    `lead` seeds, shared by each seed's grid points like the independent law's draw: per set of
    features one uniform for whether it is active (and, anticorrelated, one for which of its
    features is), per feature one for its value. A separate draw from the independent law's
    single uniform, which must keep its random stream."""

    def __init__(self, family, lead, batch, device):
        self.k, sets = family.set_size, family.n_max // family.set_size
        # one buffer (lead, 1, rows, batch) whose rows are the activity uniforms, the picks and
        # the values, in the order they are drawn: the layout kernels.toy_loss_and_grad reads
        picks = sets if family.input_law == "anticorrelated" else 0
        self.uniforms = torch.empty(lead, 1, sets + picks + family.n_max, batch, device=device)
        self.active, self.pick, self.value = self.uniforms.split([sets, picks, family.n_max], 2)
        self.pick = self.pick if picks else None

    def draw(self, gens):
        """Each seed's uniforms from its own generator (one per leading row), in one draw: the
        numbers of drawing the activity uniforms, the picks and the values in turn."""
        for k, gen in enumerate(gens):
            uniform_(self.uniforms[k], gen)

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


# Instances are stepped in chunks of about this many bytes per (n x batch) tensor (at least one
# instance), so that a step's working set stays in the core's cache between its passes: measured
# 1.15x per step at n = 200, m = 20 for one instance per chunk against five (4 MB); fewer chunks
# for small families, since each costs a dozen operator calls.
CHUNK_BYTES = 1 << 20


# Models of at most this many weights (m x n_max) take the compiled step (kernels.py) on the CPU;
# above it torch's batched products win (measured: n = 100, m = 10 ran 1.2-1.6x slower compiled).
FUSED_MAX = 250


class Trainer:
    """One unit's training state (the whole family by default); step() draws a fresh batch and
    takes one AdamW step. fused picks the compiled step (default: small models on the CPU)."""

    def __init__(self, family, cfg, device="cpu", unit=None, fused=None):
        self.batch = Batch(family, device, unit)
        seeds, per_seed = self.batch.shape
        self.opt, (self.W, self.b) = adamw(self.batch.init_weights(), cfg, device)
        self.coef = 2.0 * self.batch.importance / (cfg.batch_size * self.batch.n.view(-1, 1, 1))
        self.gens = self.batch.data_generators()
        self.r = torch.empty(seeds, family.n_max, cfg.batch_size, device=device)
        self.sets = None if family.input_law == "independent" else \
            SetDraws(family, seeds, cfg.batch_size, device)
        self.fused = (torch.device(device).type == "cpu" and family.m * family.n_max <= FUSED_MAX
                      if fused is None else fused)
        if self.fused:
            self.kernel = KernelArgs(self)
            return
        per_chunk = CHUNK_BYTES // (4 * family.n_max * cfg.batch_size)
        cuts = chunks(seeds, per_seed, per_chunk)
        size = max(sl.stop - sl.start for _, sl in cuts)
        ws = toy_model.Workspace(size, family.m, family.n_max, cfg.batch_size, device)
        self.chunks = [Chunk(self, ws, seeds, sl) for seeds, sl in cuts]

    def step(self, want_loss=False):
        """One training step on every instance; returns the per-instance loss if want_loss."""
        if self.sets is None:
            self.batch.draw(self.r, self.gens)
        else:
            self.sets.draw(self.gens)
        if self.fused:
            loss = self.kernel.loss_and_grad()
            self.opt.step()
            return torch.from_numpy(loss.copy()) if want_loss else None
        losses = [chunk.step(want_loss) for chunk in self.chunks]
        self.opt.step()
        return torch.cat(losses) if want_loss else None


def adamw(tensors, cfg, device):
    """(optimiser, parameters) for the initial tensors, each parameter with a zero .grad: the
    compiled AdamW on the CPU (whose parameters are views of its buffer), elsewhere torch's
    fused AdamW, the same update as its loop over tensors in one pass."""
    if torch.device(device).type == "cpu":
        opt = CompiledAdamW(tensors, cfg)
        return opt, opt.params
    for t in tensors:
        t.grad = torch.zeros_like(t)
    return torch.optim.AdamW(tensors, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                             fused=True), tensors


class CompiledAdamW:
    """torch.optim.AdamW (its default betas and eps) for float32 CPU tensors, as one compiled
    pass (kernels.adamw): torch's optimiser spends about 40 us of Python per step, 10-15% of a
    small family's whole step. The tensors are copied into one buffer; params are views of it
    (each with a .grad view of the gradient buffer) that the trainer uses from then on."""

    def __init__(self, tensors, cfg, betas=(0.9, 0.999), eps=1e-8):
        from precompute import kernels  # numba: imported only where a step runs
        self.kernel = kernels.adamw
        self.flat = torch.cat([t.detach().flatten() for t in tensors])
        self.grad, self.m, self.v = (torch.zeros_like(self.flat) for _ in range(3))
        self.params, start = [], 0
        for t in tensors:
            p = self.flat[start:start + t.numel()].view_as(t)
            p.grad = self.grad[start:start + t.numel()].view_as(t)
            self.params.append(p)
            start += t.numel()
        self.arrays = tuple(t.numpy() for t in (self.flat, self.grad, self.m, self.v))
        self.hyper = (cfg.learning_rate, cfg.weight_decay, *betas, eps)
        self.steps = 0

    def step(self):
        self.steps += 1
        self.kernel(*self.arrays, *self.hyper, self.steps)


class Chunk:
    """A chunk of a trainer's instances on the batched-product step (toy_model.GradStep), with
    its views of the trainer's tensors and of the workspace made once. seeds: the slice of the
    unit's seeds whose draws it reads; sl: its instances."""

    def __init__(self, trainer, ws, seeds, sl):
        bt, k = trainer.batch, sl.stop - sl.start
        self.sets, self.seeds = trainer.sets, seeds
        self.x = ws.x[:k].view(seeds.stop - seeds.start, -1, *ws.x.shape[1:])
        self.inv_p, self.r = bt.inv_p.flatten(0, 1)[sl].view_as(self.x[..., :1]), trainer.r[seeds]
        self.grad = toy_model.GradStep(trainer.W[sl], trainer.b[sl], self.x.flatten(0, 1),
                                       trainer.coef[sl], ws.part(k), trainer.W.grad[sl],
                                       trainer.b.grad[sl], bt.importance[sl], bt.n[sl], bt.relu,
                                       bt.hidden_relu)
        self.compiled = None
        if self.x.is_cpu:  # the independent law's inputs in one compiled pass
            from precompute import kernels  # numba: imported only where a step runs
            self.compiled = functools.partial(kernels.negated_inputs, self.r.numpy(),
                                              self.inv_p[..., 0].numpy(), self.x.numpy())

    def step(self, want_loss):
        """-x into the chunk's buffer from this step's draw, then its loss and gradient."""
        if self.sets is not None:
            self.sets.inputs(self.seeds, self.inv_p, self.x).neg_()
        elif self.compiled:
            self.compiled()
        else:
            toy_model.sample_negated_inputs(self.r.unsqueeze(1), self.inv_p, self.x)
        return self.grad(want_loss)


class SortedDraws:
    """Each seed's uniforms draws (seeds, rows, B, numpy), their columns sorted on the rows that
    decide activity (activity: a range of rows) by kernels.sort_columns, for the compiled steps:
    src, kept, and each instance's seed_of and level_of (its density's index in levels)."""

    def __init__(self, batch, draws, activity):
        from precompute import kernels  # numba compiles on first use: only where it runs
        self.sort_columns, self.draws, self.activity = kernels.sort_columns, draws, activity
        seeds, per_seed = batch.shape
        inv_p = batch.inv_p.flatten(0, 1)[:, 0, 0].numpy()
        self.levels, level_of = np.unique(inv_p, return_inverse=True)
        self.level_of = level_of.astype(np.int64)
        self.seed_of = np.arange(seeds * per_seed, dtype=np.int64) // per_seed
        self.src = np.empty_like(draws)
        self.kept = np.empty((seeds, len(self.levels)), np.int64)

    def sort(self):
        self.sort_columns(self.draws, *self.activity, self.levels, self.src, self.kept)
        return self.src, self.kept, self.seed_of, self.level_of


class KernelArgs:
    """A trainer's tensors as the numpy arrays kernels.toy_loss_and_grad reads and writes (views
    of the same memory, so that the optimiser's in-place updates show through)."""

    def __init__(self, trainer):
        from precompute import kernels
        self.kernel, bt, sets = kernels.toy_loss_and_grad, trainer.batch, trainer.sets
        I, n_max = len(bt.idx), bt.family.n_max
        flat = lambda t: t.reshape(I, n_max).numpy()
        # each seed's uniforms (seeds, rows, B) and the rows among them that decide activity
        if sets is None:
            self.draws = SortedDraws(bt, trainer.r.numpy(), (0, n_max))
        else:
            self.draws = SortedDraws(bt, sets.uniforms.squeeze(1).numpy(), (0, n_max // sets.k))
        law = {"independent": kernels.INDEPENDENT, "correlated": kernels.CORRELATED,
               "anticorrelated": kernels.ANTICORRELATED}[bt.family.input_law]
        self.loss = np.empty(I, np.float32)
        self.weights = (trainer.W.detach().numpy(), flat(trainer.b.detach()))
        self.rest = (flat(bt.inv_p), flat(trainer.coef), flat(bt.importance),
                     bt.n.numpy().astype(np.int64), bt.relu, bt.hidden_relu, law,
                     bt.family.set_size, trainer.W.grad.numpy(), flat(trainer.b.grad), self.loss)

    def loss_and_grad(self):
        """Writes the trainer's W.grad and b.grad for its fresh draw; returns the loss (I,)."""
        self.kernel(*self.weights, *self.draws.sort(), *self.rest)
        return self.loss


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
