"""Trained-model cache under build/cache/: one file per family and key.

A file is one JSON header line {"format", "key", "sha256"} then an .npz payload (no pickle).
Loading reads only a regular file in the cache (no link out of it, no FIFO or device), no further
than its size, and checks the header, the key and the payload's checksum; anything off is reported
as a CacheMiss with a one-line reason, and the caller makes the entry again (trains the models,
solves the phase theory, renders the image). A folder in an entry's place, which the new entry
could not replace, and a failed write are BuildErrors. Writes are atomic (temp + rename).
"""
import hashlib
import io
import json
import os
import stat
import sys
import zipfile
from pathlib import Path

import numpy as np

from errors import BuildError

FORMAT = 1
MAX_HEADER = 4096  # bytes read for the header line, which is about 150


class CacheMiss(Exception):
    """The entry cannot be used; str() is a one-line reason naming the file."""


def load(path, key, shapes=None):
    """The entry's arrays; `shapes` ({name: shape}) are required to match, so an entry written by
    a buggy or different trainer under the right key is retrained, not indexed out of range."""
    path = Path(path)
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        raise CacheMiss(f"{path}: not cached yet") from None
    except OSError as e:
        raise CacheMiss(f"{path}: unreadable cache entry ({e.strerror}); making it again") from None
    if stat.S_ISDIR(mode):  # what is made again could not be saved over it
        raise BuildError(path, "is a folder, not a cache entry, so what is made for it could not "
                         "be saved", "move it out of the cache")
    head, payload = _read(path)
    try:
        header = json.loads(head)
        if not isinstance(header, dict) or not head.endswith(b"\n"):
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


def _read(path):
    """The header line and the payload of a regular file inside the cache, read no further than
    its size: a link out of the cache, a FIFO (a read that waits forever) or a device such as
    /dev/zero (one that never ends) is a CacheMiss, as is a file too large to load."""
    real = path.resolve()
    if path.parent.resolve() not in real.parents:
        raise CacheMiss(f"{path}: cache entry links out of the cache (to {real}); making it again")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)  # opening a FIFO must not wait either
    except OSError as e:
        raise CacheMiss(f"{path}: unreadable cache entry ({e.strerror}); making it again") from None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CacheMiss(f"{path}: cache entry is not a regular file (a FIFO, device or "
                            "folder); making it again")
        if st.st_size > memory() // 2:
            raise CacheMiss(f"{path}: cache entry of {st.st_size / 2**30:.0f} GiB is more than "
                            "this machine can load; making it again")
        head = f.readline(MAX_HEADER)
        return head, f.read(st.st_size - len(head))


def memory():
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


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
    except BaseException as e:  # an interrupt or a full disk leaves no temp file behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise BuildError(path, f"cannot save the cache entry ({e.strerror})",
                             "free space on its disk, or pass another --cache") from None
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
