"""Read and validate the grid config (precompute/grid.toml) into training and family settings.

Every family expands to a list of instances in seed-major order: all grid points of seed 0, then
of seed 1, ... The trainer relies on that order to share one random draw per seed.
"""
import itertools
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from errors import BuildError, line_of, read_utf8, toml_error

DEFAULT_GRID = Path(__file__).with_name("grid.toml")

TRAIN_KEYS = {"batch_size": int, "steps": int, "learning_rate": float, "weight_decay": float,
              "eval_samples": int}
FAMILY_KEYS = {"title", "n", "m", "importance_decay", "sparsity", "density", "second_importance",
               "seeds", "activation", "hidden_activation", "snapshots", "input_law", "set_size",
               "model"}
ACTIVATIONS = ("relu", "linear")
# How inputs are drawn (Elhage et al. 2022, "Correlated and Anticorrelated Features"): features
# independent, or in consecutive sets of `set_size` that are all zero together with probability
# S; in an active correlated set every feature takes its own uniform value, in an active
# anticorrelated set one feature, picked uniformly, does.
INPUT_LAWS = ("independent", "correlated", "anticorrelated")
# "toy": the tied-weight toy model (toy_model.py); "absolute-value": the paper's "Computation in
# Superposition" model, y = ReLU(W2 ReLU(W1 x) + b) with target |x| (abs_model.py).
MODELS = ("toy", "absolute-value")
SAE_TRAIN_KEYS = {"batch_size": int, "steps": int, "learning_rate": float, "eval_samples": int}
SAE_KEYS = {"n", "sparsity", "dict_size", "l1"}


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
    hidden_activation: str = "linear"  # "relu": the paper's privileged-basis model
    snapshots: int = 0  # W and b kept at this many log-spaced steps (learning dynamics); 0: none
    input_law: str = "independent"  # one of INPUT_LAWS
    set_size: int = 1  # features per correlated or anticorrelated set
    model: str = "toy"  # one of MODELS

    @property
    def n_max(self):
        return max(i.n for i in self.instances)

    @property
    def per_seed(self):
        return len(self.instances) // self.seeds


@dataclass(frozen=True)
class SAETrainConfig:
    batch_size: int
    steps: int
    learning_rate: float
    eval_samples: int


@dataclass(frozen=True)
class SAESweep:
    """Sparse autoencoders for one family's trained models: targets x dict sizes x L1."""
    family: str
    n: int
    sparsities: tuple
    dict_sizes: tuple
    l1: tuple
    spec: dict


@dataclass(frozen=True)
class Grid:
    path: Path
    train: TrainConfig
    families: dict  # name -> Family
    sae_train: SAETrainConfig  # None when there are no [sae.FAMILY] tables
    sae: dict  # family name -> SAESweep


def load_grid(path=DEFAULT_GRID):
    path = Path(path)
    text = read_utf8(path, ("grid config not found", "pass an existing file to --grid"))
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise toml_error(path, text, e) from None
    fail = _failer(path, text)
    if "extends" in raw:
        raw = _extend(path, raw, fail)
    unknown = set(raw) - {"train", "family", "sae_train", "sae"}
    if unknown:
        key = sorted(unknown)[0]
        fail(f"unknown table or key '{key}'",
             "use only [train], [family.NAME], [sae_train] and [sae.FAMILY]", key)
    train = _train(raw.get("train"), TRAIN_KEYS, TrainConfig, "train", fail)
    families = raw.get("family")
    if not isinstance(families, dict) or not families:
        fail("no [family.NAME] tables", "define at least one family", "family")
    families = {name: _family(name, spec, fail) for name, spec in families.items()}
    sae = {name: _sae(name, spec, families, fail) for name, spec in raw.get("sae", {}).items()}
    sae_train = _train(raw["sae_train"], SAE_TRAIN_KEYS, SAETrainConfig, "sae_train", fail) \
        if sae else None
    for name, fam in families.items():
        need, have = memory_estimate(fam, train), physical_memory()
        if need > have:
            fail(f"[family.{name}] needs about {need / 2**30:.0f} GiB to train "
                 f"({len(fam.instances)} models up to n={fam.n_max}), this machine has "
                 f"{have / 2**30:.0f} GiB", "use fewer or smaller grid points, or a smaller "
                 "[train] batch_size", f"family.{name}")
    return Grid(path, train, families, sae_train, sae)


def memory_estimate(family, train):
    """Bytes a family's batched training holds at once, within a small factor: the float32
    weights with their Adam state, and the batch tensors (input, hidden, output, gradients)."""
    T, n, m = len(family.instances), family.n_max, family.m
    return 4 * T * (4 * m * n + 8 * n * max(train.batch_size, 1) + m * train.batch_size)


def physical_memory():
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _extend(path, raw, fail):
    """`extends = "FILE"`: FILE's tables, with this file's [family.X], [sae.X], [train] and
    [sae_train] replacing those of the same name. FILE is checked first, with its own lines."""
    base = raw.pop("extends")
    if not isinstance(base, str):
        fail("extends must name a grid file", 'write extends = "grid.toml"', "extends")
    base_path = path.parent / base
    if base_path.resolve() == path.resolve():
        fail("the grid extends itself", "name another grid file", "extends")
    if not base_path.exists():
        fail(f"extends names {base_path}, which does not exist",
             "name a grid file in the same folder", "extends")
    load_grid(base_path)
    merged = tomllib.loads(read_utf8(base_path, ("grid config not found", "restore it")))
    for table, value in raw.items():
        nested = table in ("family", "sae") and isinstance(value, dict)
        merged[table] = {**merged.get(table, {}), **value} if nested else value
    return merged


def _failer(path, text):
    def fail(message, fix, needle=None, after=None):
        start = line_of(text, after) if after else 1
        raise BuildError(path, message, fix, line_of(text, needle, start or 1) if needle else None)
    return fail


def _train(spec, keys, cls, table, fail):
    header = f"[{table}]"
    if not isinstance(spec, dict):
        fail(f"missing {header} table", f"add {header} with " + ", ".join(keys), None)
    values = {}
    for key, kind in keys.items():
        if key not in spec:
            fail(f"{header} is missing '{key}'", f"add {key} = <{kind.__name__}>", header)
        values[key] = _typed(spec[key], kind, f"{header} {key}", fail, key, header)
        if values[key] < 0 or (values[key] == 0 and key != "weight_decay"):
            fail(f"{header} {key} must be positive", f"set {key} > 0", key, header)
    for key in set(spec) - set(keys):
        fail(f"unknown key '{key}' in {header}", "expected one of " + ", ".join(keys), key, header)
    return cls(**values)


def _typed(value, kind, what, fail, needle, after):
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if not ok or isinstance(value, bool) or not math.isfinite(value):
        name = {"int": "an integer", "float": "a number"}[kind.__name__]
        fail(f"{what} must be {name}, got {value!r}", f"write {name}", needle, after)
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
    if m > min(ns) and spec.get("model") != "absolute-value":
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
    hidden = spec.get("hidden_activation", "linear")
    if hidden not in ACTIVATIONS:
        err(f"hidden_activation {hidden!r} is not one of {ACTIVATIONS}",
            "use linear (the basic model) or relu (a privileged basis)", "hidden_activation")
    law = spec.get("input_law", "independent")
    if law not in INPUT_LAWS:
        err(f"input_law {law!r} is not one of {INPUT_LAWS}", "use independent, correlated or "
            "anticorrelated", "input_law")
    if (law == "independent") != ("set_size" not in spec):
        err("set_size goes with a correlated or anticorrelated input_law, and only with one",
            "give both input_law and set_size, or neither",
            "set_size" if "set_size" in spec else "input_law")
    set_size = _typed(spec.get("set_size", 1), int, f"{header} set_size", fail, "set_size", header)
    if law != "independent" and (set_size < 2 or any(n % set_size for n in ns)):
        err(f"set_size {set_size} must be at least 2 and divide every n {ns}",
            "choose a set size that splits the features into whole sets", "set_size")
    model = spec.get("model", "toy")
    if model not in MODELS:
        err(f"model {model!r} is not one of {MODELS}", "use toy or absolute-value", "model")
    if model != "toy" and ({"activation", "hidden_activation", "second_importance", "snapshots"}
                           & set(spec)
                           or law != "independent"):
        err("the absolute-value model fixes its activations and draws independent inputs",
            "drop activation, hidden_activation, second_importance, snapshots and input_law",
            "model")
    if ("sparsity" in spec) == ("density" in spec):
        err("give exactly one of 'sparsity' (a list) or 'density' (a list or range)",
            "keep one of the two", "sparsity" if "sparsity" in spec else None)
    given = "sparsity" if "sparsity" in spec else "density"
    values = _sweep(spec[given], given, err)
    sparsities = values if given == "sparsity" else [1.0 - d for d in values]
    for value, s in zip(values, sparsities):
        if not 0.0 <= s < 1.0:  # quoted as written: a density of 0 is a sparsity of 1
            err(f"{given} {value:g} is outside {'[0, 1)' if given == 'sparsity' else '(0, 1]'}",
                "every feature needs a chance to be active", given)
    seconds = _sweep(spec["second_importance"], "second_importance", err) \
        if "second_importance" in spec else [None]
    if "second_importance" in spec and ns != [2]:
        err("second_importance needs n = 2", "set n = 2 or drop second_importance",
            "second_importance")
    if any(s is not None and s <= 0 for s in seconds):
        err("second_importance must be positive", "use values > 0", "second_importance")

    snapshots = _snapshots(spec.get("snapshots"), err, fail, header) if "snapshots" in spec else 0

    # one importance tuple per (n, second), shared by every seed and sparsity
    weights = {}
    for n, second in itertools.product(ns, seconds):
        importance = [decay ** i for i in range(n)]
        if second is not None:
            importance[1] = second
        weights[n, second] = tuple(_clean(v) for v in importance)
    instances = [Instance(seed, n, _clean(s), weights[n, second])
                 for seed, n, second, s in itertools.product(range(seeds), ns, seconds, sparsities)]
    return Family(name, str(spec.get("title", name)), m, activation, seeds, tuple(instances), spec,
                  hidden, snapshots, law, set_size, model)


def _snapshots(value, err, fail, header):
    """`snapshots = { num = K }`: keep W and b at K log-spaced training steps (train.snapshot_steps)."""
    if not isinstance(value, dict) or set(value) != {"num"}:
        err("snapshots must be a table with one key, num", "write snapshots = { num = 40 }",
            "snapshots")
    num = _typed(value["num"], int, f"{header} snapshots num", fail, "snapshots", header)
    if num < 2:
        err("snapshots num must be at least 2", "write snapshots = { num = 40 }", "snapshots")
    return num


def _sae(name, spec, families, fail):
    header = f"[sae.{name}]"
    err = lambda msg, fix, key=None: fail(f"{header}: {msg}", fix, key or header, header)
    if name not in families:
        err(f"no [family.{name}] to take models from", "name an existing family")
    fam = families[name]
    for key in spec:
        if key not in SAE_KEYS:
            err(f"unknown key '{key}'", "expected one of " + ", ".join(sorted(SAE_KEYS)), key)
    ns = sorted({i.n for i in fam.instances})
    n = _typed(spec.get("n", ns[0]), int, f"{header} n", fail, "n", header)
    if n not in ns or ("n" not in spec and len(ns) > 1):
        err(f"n must be one of the family's {ns}", "set n to one of them", "n")
    trained = {i.sparsity for i in fam.instances}
    sparsities = _sweep(spec.get("sparsity"), "sparsity", err)
    for s in sparsities:
        if s not in trained:
            err(f"no trained model at sparsity {s:g}", "use a sparsity of the family's grid",
                "sparsity")
    _sweep(spec.get("dict_size"), "dict_size", err)  # a non-empty list of numbers
    sizes = [_typed(d, int, f"{header} dict_size", fail, "dict_size", header)
             for d in spec["dict_size"]]
    if min(sizes) < 1:
        err("dict_size must be at least 1", "use positive integers", "dict_size")
    l1 = _sweep(spec.get("l1"), "l1", err)
    if min(l1) < 0:
        err("l1 must be non-negative", "use values >= 0", "l1")
    return SAESweep(name, n, tuple(sparsities), tuple(sizes), tuple(l1), spec)


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
