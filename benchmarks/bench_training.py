#!/usr/bin/env python3
"""Training speed: the project's trainer against a notebook-style reference trainer
(benchmarks/reference_trainer.py) on the same families, alternating the two so that other load on
the machine hits both alike, and the whole grid against one-model-at-a-time training.

    python benchmarks/bench_training.py [--grid FILE] [--family NAME ...] [--steps 300]
                                        [--rounds 3] [--cold [--workers K]] [--paths]

Prints, per family, the median over rounds of reference time / our time for the same steps
(range in brackets), then the whole grid's training time at the grid's step count, batched and
as one reference model per grid point (timed on one model per feature count, scaled up). Both
have the machine's cores: the reference through torch's threads, ours as the build trains a
family, its units (train.units) on one worker process per core, one thread each.
--cold instead trains the families into an empty cache the way the build does (units on a pool
of worker processes, evaluation included) and prints when each is done: the build's cold
training time, e.g. of the paper-size sweep with
    --grid precompute/grid-paper.toml --family dimensionality --cold
--paths instead times our trainer's two steps against each other per family: the compiled step
(precompute/kernels.py) against the batched-product one (toy_model.GradStep).
"""
import argparse
import contextlib
import multiprocessing
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from precompute import config, models  # noqa: E402
from precompute.train import Trainer, units  # noqa: E402
import reference_trainer  # noqa: E402


def seconds_per_step(step, steps):
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


class UnitWorkers:
    """Our trainer as the build runs a family: its units (train.units), each on one thread, on
    one worker process per core, the largest first to the least loaded worker (as the build's
    pool takes them). The workers keep their trainers between calls, idle while the reference
    runs."""

    def __init__(self, fam, cfg):
        ctx = multiprocessing.get_context("spawn")
        size = lambda u: len(u.seeds) * len(u.positions)
        cut = sorted(units(fam, cfg.batch_size), key=size, reverse=True)
        work = [[] for _ in range(min(models.cores(), len(cut)))]
        for u in cut:
            min(work, key=lambda us: sum(map(size, us))).append(u)
        self.pipes, self.processes = [], []
        for us in work:
            here, there = ctx.Pipe()
            self.processes.append(ctx.Process(target=unit_worker, args=(there, fam, cfg, us),
                                              daemon=True))
            self.processes[-1].start()
            there.close()  # the worker's end: if the worker dies, recv() raises, not hangs
            self.pipes.append(here)

    def seconds_per_step(self, steps):
        t = time.perf_counter()
        for pipe in self.pipes:
            pipe.send(steps)
        for pipe in self.pipes:
            pipe.recv()
        return (time.perf_counter() - t) / steps

    def close(self):
        """Ends the workers and waits for them, so that nothing timed next shares the cores."""
        for pipe in self.pipes:
            with contextlib.suppress(OSError):  # a worker that died has closed its end
                pipe.send(0)
        for p in self.processes:
            p.join()


def unit_worker(pipe, fam, cfg, us):
    torch.set_num_threads(1)
    trainers = [Trainer(fam, cfg, unit=u) for u in us]
    while steps := pipe.recv():
        for tr in trainers:
            seconds_per_step(tr.step, steps)
        pipe.send(True)


def compare(fam, cfg, steps, rounds):
    """(ours s/step, reference s/step, ratios per round) for one family, alternating the two:
    the reference on all of torch's threads, ours on UnitWorkers."""
    ours = UnitWorkers(fam, cfg)
    refs = reference_trainer.for_family(fam)
    ref_step = lambda: [r.step(cfg.batch_size) for r in refs]
    t_ours, t_ref = [], []
    try:
        ours.seconds_per_step(20), seconds_per_step(ref_step, 5)  # warm up (and compile)
        for _ in range(rounds):
            t_ref.append(seconds_per_step(ref_step, max(20, steps // 4)))
            t_ours.append(ours.seconds_per_step(steps))
    finally:
        ours.close()
    return min(t_ours), min(t_ref), [r / o for r, o in zip(t_ref, t_ours)]


def compare_paths(fam, cfg, steps, rounds):
    """(compiled s/step, batched-product s/step, ratios per round): our trainer's two steps,
    alternating."""
    bmm, fused = Trainer(fam, cfg, fused=False), Trainer(fam, cfg, fused=True)
    seconds_per_step(bmm.step, 20), seconds_per_step(fused.step, 20)  # warm up (and compile)
    t_bmm, t_fused = [], []
    for _ in range(rounds):
        t_bmm.append(seconds_per_step(bmm.step, steps))
        t_fused.append(seconds_per_step(fused.step, steps))
    return min(t_fused), min(t_bmm), [d / s for d, s in zip(t_bmm, t_fused)]


def one_at_a_time(fam, cfg, steps):
    """Seconds per step for all of the family's models trained one by one: a single-instance
    reference model per feature count n, timed, times the number of models of that n."""
    total = 0.0
    for n in sorted({i.n for i in fam.instances}):
        ks = [k for k, i in enumerate(fam.instances) if i.n == n]
        (ref,) = reference_trainer.for_family(fam, ks[-1:])
        seconds_per_step(lambda: ref.step(cfg.batch_size), 5)
        total += len(ks) * seconds_per_step(lambda: ref.step(cfg.batch_size), steps)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=config.DEFAULT_GRID)
    ap.add_argument("--family", nargs="*", help="families to time (default: all)")
    ap.add_argument("--steps", type=int, default=300, help="steps of ours per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="train the families cold, as the build")
    ap.add_argument("--workers", type=int, help="--cold's worker processes (default: one per core)")
    ap.add_argument("--paths", action="store_true",
                    help="time the compiled step against the batched-product step instead")
    args = ap.parse_args()
    grid = config.load_grid(args.grid)
    names = args.family or list(grid.families)
    cfg, full = grid.train, grid.train.steps
    if args.cold:
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            models.trained_families({k: grid.families[k] for k in names}, cfg, "cpu", cache,
                                    progress=False, workers=args.workers)
        print(f"cold cache, {full} steps, with evaluation: {time.perf_counter() - t:.0f} s")
        return
    # The reference and Trainer are the toy model's; abs_model families have their own trainer.
    other = [n for n in names if grid.families[n].model != "toy"]
    names = [n for n in names if n not in other]
    if other:
        print(f"not timed against the reference (not the toy model): {', '.join(other)}")
    if args.paths:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds "
              f"of {args.steps} steps, each path")
        print(f"{'family':16}{'models':>7}{'compiled ms':>12}{'bmm ms/step':>12}{'speedup':>21}")
        for name in names:
            fam = grid.families[name]
            t_fused, t_bmm, ratios = compare_paths(fam, cfg, args.steps, args.rounds)
            print(f"{name:16}{len(fam.instances):>7}{t_fused * 1e3:>12.2f}{t_bmm * 1e3:>12.2f}"
                  f"{statistics.median(ratios):>8.2f}x [{min(ratios):.2f}-{max(ratios):.2f}]")
        return
    print(f"torch {torch.__version__}; the reference on {torch.get_num_threads()} threads, ours on "
          f"up to {models.cores()} worker processes of one thread; {args.rounds} rounds of "
          f"{args.steps} steps (ours) against {max(20, args.steps // 4)} (reference)")
    print(f"{'family':16}{'models':>7}{'ours ms/step':>13}{'ref ms/step':>12}{'speedup':>21}")
    ours_s = single_s = 0.0
    for name in names:
        fam = grid.families[name]
        t_ours, t_ref, ratios = compare(fam, cfg, args.steps, args.rounds)
        print(f"{name:16}{len(fam.instances):>7}{t_ours * 1e3:>13.2f}{t_ref * 1e3:>12.2f}"
              f"{statistics.median(ratios):>8.1f}x [{min(ratios):.1f}-{max(ratios):.1f}]")
        ours_s += t_ours * full
        single_s += one_at_a_time(fam, cfg, max(20, args.steps // 4)) * full
    print(f"{'+'.join(names) if args.family else 'whole grid'} at {full} steps: {ours_s:.0f} s "
          f"batched, {single_s:.0f} s one model at a time ({single_s / ours_s:.0f}x)")


if __name__ == "__main__":
    main()
