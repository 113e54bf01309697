"""Shared fixtures: the project's real grid, trained (or taken from build/cache), and one real
build of the site. Tests check these against the paper and the brief, not against themselves."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from precompute import config, models, sae  # noqa: E402

CACHE = ROOT / "build" / "cache"


@pytest.fixture(scope="session")
def grid():
    return config.load_grid()


@pytest.fixture(scope="session")
def trained(grid):
    """Everything the build trains, keyed as the build keys it ("NAME", "sae.NAME")."""
    out = models.trained_families(grid.families, grid.train, "cpu", CACHE, progress=False)
    for name, sweep in grid.sae.items():
        out[f"sae.{name}"] = sae.trained_saes(sweep, out[name], grid.sae_train, "cpu", CACHE)
    return out


def run_build(*args, check=True):
    """python build.py ARGS as a subprocess; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, str(ROOT / "build.py"), "--quiet", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def site(trained, tmp_path_factory):
    """The real site, built once from the real grid (models from the cache the `trained`
    fixture filled)."""
    out = tmp_path_factory.mktemp("site") / "site"
    run_build("--out", out)
    return out
