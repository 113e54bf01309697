"""Trained-model cache under build/cache/: one file per family and key.

A file is one JSON header line {"format", "key", "sha256"} then an .npz payload (no pickle).
Loading checks the header, the key and the payload's checksum; anything off is reported as a
CacheMiss with a one-line reason, and the caller makes the entry again (trains the models, solves
the phase theory, renders the image). Writes are atomic (temp + rename).
"""
import hashlib
import io
import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

FORMAT = 1


class CacheMiss(Exception):
    """The entry cannot be used; str() is a one-line reason naming the file."""


def load(path, key, shapes=None):
    """The entry's arrays; `shapes` ({name: shape}) are required to match, so an entry written by
    a buggy or different trainer under the right key is retrained, not indexed out of range."""
    path = Path(path)
    if not path.exists():
        raise CacheMiss(f"{path}: not cached yet")
    try:
        blob = path.read_bytes()
    except OSError as e:  # unreadable, a directory, ...
        raise CacheMiss(f"{path}: unreadable cache entry ({e.strerror}); making it again") from None
    head, sep, payload = blob.partition(b"\n")
    try:
        header = json.loads(head)
        if not isinstance(header, dict) or not sep:
            raise ValueError
    except ValueError:
        raise CacheMiss(f"{path}: corrupt cache entry (unreadable header); "
                        "making it again") from None
    if header.get("format") != FORMAT or header.get("key") != key:
        raise CacheMiss(f"{path}: foreign or stale cache entry (key does not match); "
                        "making it again")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CacheMiss(f"{path}: corrupt cache entry (checksum mismatch, truncated?); "
                        "making it again")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise CacheMiss(f"{path}: corrupt cache entry ({e}); making it again") from None
    for name, shape in (shapes or {}).items():
        if name not in arrays or arrays[name].shape != tuple(shape):
            got = arrays[name].shape if name in arrays else "missing"
            raise CacheMiss(f"{path}: cache entry has the wrong shape for '{name}' ({got}, "
                            f"expected {tuple(shape)}); making it again")
    return arrays


def save(path, key, arrays):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    header = json.dumps({"format": FORMAT, "key": key,
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(header + b"\n" + payload)
        os.replace(tmp, path)
    except BaseException:  # an interrupt or a full disk leaves no temp file behind
        tmp.unlink(missing_ok=True)
        raise


def made(path, key, make, shapes=None, log=lambda msg: print(msg, file=sys.stderr)):
    """The entry's arrays, or, where it cannot be used, make()'s, saved there: for products that
    take seconds to compute and depend only on their key. A missing entry is normal; a bad one is
    worth a line (log)."""
    try:
        return load(path, key, shapes)
    except CacheMiss as miss:
        if path.exists() or path.is_symlink():
            log(str(miss))
    arrays = make()
    save(path, key, arrays)
    return arrays
