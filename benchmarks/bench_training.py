#!/usr/bin/env python3
"""Training speed: model-steps per second for each family of the grid, batched (our trainer)
against a plain per-model loop of the same recipe, and the whole grid's cold training time.

    python benchmarks/bench_training.py [--steps 1000] [--skip-cold]
"""
import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from precompute import config, models  # noqa: E402
from precompute.train import train_family  # noqa: E402


def per_model_loop(inst, m, relu, cfg, steps):
    """The notebook's way: one model, autograd, AdamW, a fresh batch each step."""
    n, p = inst.n, 1.0 - inst.sparsity
    W = torch.nn.init.xavier_normal_(torch.empty(m, n)).requires_grad_()
    b = torch.zeros(n, requires_grad=True)
    importance = torch.tensor(inst.importance)
    opt = torch.optim.AdamW([W, b], lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    t = time.perf_counter()
    for _ in range(steps):
        x = torch.where(torch.rand(cfg.batch_size, n) < p, torch.rand(cfg.batch_size, n), 0.0)
        out = x @ W.T @ W + b
        loss = (importance * (x - (torch.relu(out) if relu else out)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--skip-cold", action="store_true", help="skip the whole-grid cold run")
    args = ap.parse_args()
    grid = config.load_grid()
    cfg = replace(grid.train, steps=args.steps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps each")
    print(f"{'family':16}{'models':>8}{'batched model-steps/s':>24}{'per-model loop':>17}{'speedup':>9}")
    batched_s = looped_s = 0.0  # seconds each way for the whole grid at the full step count
    for name, fam in grid.families.items():
        train_family(fam, replace(cfg, steps=50), progress=False)  # warm the thread pool
        t = time.perf_counter()
        train_family(fam, cfg, progress=False)
        batched = len(fam.instances) * args.steps / (time.perf_counter() - t)
        single = per_model_loop(fam.instances[-1], fam.m, fam.activation == "relu", cfg,
                                max(100, args.steps // 5))
        print(f"{name:16}{len(fam.instances):>8}{batched:>24,.0f}{single:>17,.0f}"
              f"{batched / single:>8.0f}x")
        batched_s += len(fam.instances) * grid.train.steps / batched
        looped_s += len(fam.instances) * grid.train.steps / single
    print(f"whole grid at {grid.train.steps} steps: {batched_s:.0f} s batched against "
          f"{looped_s:.0f} s as a per-model loop ({looped_s / batched_s:.0f}x)")
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            for fam in grid.families.values():
                models.trained_family(fam, grid.train, "cpu", cache, progress=False)
            total = time.perf_counter() - t
        print(f"whole default grid, cold cache, {grid.train.steps} steps: {total:.0f} s "
              f"(target: under 180 s)")


if __name__ == "__main__":
    main()
