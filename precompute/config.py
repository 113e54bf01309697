"""Read and validate the grid config (precompute/grid.toml) into training and family settings.

Every family expands to a list of instances in seed-major order: all grid points of seed 0, then
of seed 1, ... The trainer relies on that order to share one random draw per seed.
"""
import itertools
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

from errors import BuildError, line_of

DEFAULT_GRID = Path(__file__).with_name("grid.toml")

TRAIN_KEYS = {"batch_size": int, "steps": int, "learning_rate": float, "weight_decay": float,
              "eval_samples": int}
FAMILY_KEYS = {"title", "n", "m", "importance_decay", "sparsity", "density", "second_importance",
               "seeds", "activation"}
ACTIVATIONS = ("relu", "linear")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int
    steps: int
    learning_rate: float
    weight_decay: float
    eval_samples: int
    log_every: int = 100  # loss-curve resolution; not part of the paper's recipe


@dataclass(frozen=True)
class Instance:
    seed: int
    n: int
    sparsity: float
    importance: tuple  # one weight per feature


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    m: int
    activation: str
    seeds: int
    instances: tuple  # of Instance, seed-major
    spec: dict  # the family's table as written, for cache keys and provenance

    @property
    def n_max(self):
        return max(i.n for i in self.instances)

    @property
    def per_seed(self):
        return len(self.instances) // self.seeds


@dataclass(frozen=True)
class Grid:
    path: Path
    train: TrainConfig
    families: dict  # name -> Family


def load_grid(path=DEFAULT_GRID):
    path = Path(path)
    if not path.is_file():
        raise BuildError(path, "grid config not found", "pass an existing file to --grid")
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BuildError(path, f"not valid TOML ({e})", "fix the syntax at that position") from None
    fail = _failer(path, text)
    unknown = set(raw) - {"train", "family"}
    if unknown:
        key = sorted(unknown)[0]
        fail(f"unknown table or key '{key}'", "use only [train] and [family.NAME]", key)
    train = _train(raw.get("train"), fail)
    families = raw.get("family")
    if not isinstance(families, dict) or not families:
        fail("no [family.NAME] tables", "define at least one family", "family")
    return Grid(path, train, {name: _family(name, spec, fail) for name, spec in families.items()})


def _failer(path, text):
    def fail(message, fix, needle=None, after=None):
        start = line_of(text, after) if after else 1
        raise BuildError(path, message, fix, line_of(text, needle, start or 1) if needle else None)
    return fail


def _train(spec, fail):
    if not isinstance(spec, dict):
        fail("missing [train] table", "add [train] with " + ", ".join(TRAIN_KEYS), None)
    values = {}
    for key, kind in TRAIN_KEYS.items():
        if key not in spec:
            fail(f"[train] is missing '{key}'", f"add {key} = <{kind.__name__}>", "[train]")
        values[key] = _typed(spec[key], kind, f"[train] {key}", fail, key, "[train]")
        if values[key] <= 0 and key != "weight_decay":
            fail(f"[train] {key} must be positive", f"set {key} > 0", key, "[train]")
    for key in set(spec) - set(TRAIN_KEYS):
        fail(f"unknown key '{key}' in [train]", "expected one of " + ", ".join(TRAIN_KEYS), key)
    return TrainConfig(**values)


def _typed(value, kind, what, fail, needle, after):
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if not ok or isinstance(value, bool):
        fail(f"{what} must be a {kind.__name__}, got {value!r}", f"write a {kind.__name__}",
             needle, after)
    return kind(value)


def _family(name, spec, fail):
    header = f"[family.{name}]"
    if not isinstance(spec, dict):
        fail(f"{header} must be a table", "write it as [family.NAME] with keys", f"family.{name}")
    err = lambda msg, fix, key=None: fail(f"{header}: {msg}", fix, key or header, header)
    for key in spec:
        if key not in FAMILY_KEYS:
            err(f"unknown key '{key}'", "expected one of " + ", ".join(sorted(FAMILY_KEYS)), key)
    for key in ("n", "m", "seeds"):
        if key not in spec:
            err(f"missing '{key}'", f"add {key} = <int>")
    ns = spec["n"] if isinstance(spec["n"], list) else [spec["n"]]
    if not ns:
        err("empty sweep over n", "list at least one n", "n")
    ns = [_typed(v, int, f"{header} n", fail, "n", header) for v in ns]
    m = _typed(spec["m"], int, f"{header} m", fail, "m", header)
    seeds = _typed(spec["seeds"], int, f"{header} seeds", fail, "seeds", header)
    if m < 1 or seeds < 1 or min(ns) < 1:
        err("n, m and seeds must be at least 1", "use positive integers", "m")
    if m > min(ns):
        err(f"m={m} exceeds n={min(ns)}: a toy model of superposition compresses n features into "
            "m < n dimensions", "choose m <= n", "m")
    decay = _typed(spec.get("importance_decay", 1.0), float, f"{header} importance_decay", fail,
                   "importance_decay", header)
    if not 0 < decay <= 1:
        err("importance_decay must be in (0, 1]", "use 1.0 for uniform importance",
            "importance_decay")
    activation = spec.get("activation", "relu")
    if activation not in ACTIVATIONS:
        err(f"activation {activation!r} is not one of {ACTIVATIONS}", "use relu or linear",
            "activation")
    if ("sparsity" in spec) == ("density" in spec):
        err("give exactly one of 'sparsity' (a list) or 'density' (a list or range)",
            "keep one of the two", "sparsity" if "sparsity" in spec else None)
    if "sparsity" in spec:
        sparsities = _sweep(spec["sparsity"], "sparsity", err)
    else:
        sparsities = [1.0 - d for d in _sweep(spec["density"], "density", err)]
    for s in sparsities:
        if not 0.0 <= s < 1.0:
            err(f"sparsity {s:g} is outside [0, 1)", "every feature needs a chance to be active",
                "sparsity" if "sparsity" in spec else "density")
    seconds = _sweep(spec["second_importance"], "second_importance", err) \
        if "second_importance" in spec else [None]
    if "second_importance" in spec and ns != [2]:
        err("second_importance needs n = 2", "set n = 2 or drop second_importance",
            "second_importance")
    if any(s is not None and s <= 0 for s in seconds):
        err("second_importance must be positive", "use values > 0", "second_importance")

    instances = []
    for seed, n, second, s in itertools.product(range(seeds), ns, seconds, sparsities):
        importance = [decay ** i for i in range(n)]
        if second is not None:
            importance[1] = second
        instances.append(Instance(seed, n, _clean(s), tuple(_clean(v) for v in importance)))
    return Family(name, str(spec.get("title", name)), m, activation, seeds, tuple(instances), spec)


def _sweep(value, key, err):
    """A list of numbers, or a range table {from, to, num, spacing = "log" | "linear"}."""
    if isinstance(value, dict):
        extra = set(value) - {"from", "to", "num", "spacing"}
        if extra or not {"from", "to", "num"} <= set(value):
            err(f"range '{key}' needs exactly from, to, num (and optional spacing)",
                f"write {key} = {{ from = A, to = B, num = K, spacing = \"log\" }}", key)
        lo, hi, num, spacing = value["from"], value["to"], value["num"], value.get("spacing", "linear")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)) \
                or not isinstance(num, int) or num < 1:
            err(f"range '{key}' has a wrong type", "from and to are numbers, num a positive int", key)
        if spacing not in ("log", "linear") or (spacing == "log" and min(lo, hi) <= 0):
            err(f"range '{key}' spacing must be 'linear' or 'log' (with positive ends)",
                "fix spacing or the ends", key)
        if num == 1:
            return [float(lo)]
        t = [i / (num - 1) for i in range(num)]
        if spacing == "log":
            return [math.exp(math.log(lo) + f * (math.log(hi) - math.log(lo))) for f in t]
        return [lo + f * (hi - lo) for f in t]
    if not isinstance(value, list) or not value:
        err(f"'{key}' must be a non-empty list or a range table", "list at least one value", key)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        err(f"'{key}' must hold only numbers", "remove the non-numeric entries", key)
    return [float(v) for v in value]


def _clean(x):
    """Round away float noise from range arithmetic, so parameters print and hash stably."""
    return float(f"{x:.10g}")
