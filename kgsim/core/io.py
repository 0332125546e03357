"""Small file helpers: atomic writes with the user's permissions, checked reads, checked output paths.

Writes go to a temporary file (or directory) beside the target, then are renamed into place, so a
killed run never leaves a half-written artefact; the result gets the permissions an ordinary
``open`` would give under the process umask (0644 files and 0755 folders under umask 022), not the
private 0600/0700 of :mod:`tempfile`.

Reads of user-supplied files go through :func:`read_bytes`, :func:`read_text` and :func:`read_json`,
which raise :class:`InputFileError` with one line naming the file and the problem (missing, a
folder, unreadable, not UTF-8, not JSON, the wrong JSON type). :func:`check_out_dir` checks an
output folder before any work and raises :class:`OutputPathError` naming it.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["InputFileError", "OutputPathError", "write_json", "write_text", "write_npz", "atomic_dir",
           "read_bytes", "read_text", "read_json", "check_out_dir", "check_out_file", "file_mode", "dir_mode",
           "copy_file", "copy_tree", "decode_utf8", "check_safetensors"]


class InputFileError(ValueError):
    """A file kgsim reads is missing, unreadable or malformed; the message names the file."""


class OutputPathError(ValueError):
    """An output path cannot be used (a file where a folder is needed, not writable, ...)."""


# --------------------------------------------------------------------------------------------
# Permissions: what a plain open()/mkdir() would give under the current umask
# --------------------------------------------------------------------------------------------

_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """0o666 less the umask (0o644 under umask 022)."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """0o777 less the umask (0o755 under umask 022)."""
    return 0o777 & ~_umask()


def _temp_file(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.fchmod(fd, file_mode())
    return fd, tmp


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------

def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _replace_with(tmp: str, path: Path, fill) -> None:
    try:
        fill()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    fd, tmp = _temp_file(path)

    def fill():
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=_default, allow_nan=True)
            f.write("\n")
    _replace_with(tmp, path, fill)


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    fd, tmp = _temp_file(path)

    def fill():
        with os.fdopen(fd, "w") as f:
            f.write(text)
    _replace_with(tmp, path, fill)


def write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """np.savez, atomically."""
    path = Path(path)
    fd, tmp = _temp_file(path, suffix=".tmp.npz")
    os.close(fd)
    _replace_with(tmp, path, lambda: np.savez(tmp, **arrays))


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `final`; on success it replaces `final` whole.
    On any error (or a kill) `final` is left as it was and the temporary directory is removed
    (or, after a kill, ignored: its name starts with a dot)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp"))
    os.chmod(tmp, dir_mode())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def copy_file(src: str | Path, dst: str | Path) -> None:
    """Copy file `src` to `dst` atomically, with the user's permissions."""
    dst = Path(dst)
    fd, tmp = _temp_file(dst)
    os.close(fd)
    _replace_with(tmp, dst, lambda: shutil.copyfile(src, tmp))


def copy_tree(src: str | Path, dst: str | Path) -> None:
    """Copy folder `src` to `dst` atomically (`dst` appears whole or not at all; it replaces an
    existing `dst`)."""
    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=shutil.copyfile)
        mode_d, mode_f = dir_mode(), file_mode()
        for root, dirs, files in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), mode_d)
            for f in files:
                os.chmod(os.path.join(root, f), mode_f)


# --------------------------------------------------------------------------------------------
# Checked reads
# --------------------------------------------------------------------------------------------

def _os_problem(path: Path, e: OSError, what: str) -> InputFileError:
    why = {FileNotFoundError: "no such file", IsADirectoryError: "is a folder, not a file",
           NotADirectoryError: "a parent of it is a file, not a folder",
           PermissionError: "permission denied"}.get(type(e), f"cannot be read ({e.strerror or e})")
    return InputFileError(f"{path}: {why} (expected {what})")


def read_bytes(path: str | Path, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of `path` (at most `limit`); InputFileError (naming it) when it is missing, a
    folder or unreadable."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return f.read() if limit is None else f.read(limit)
    except OSError as e:
        raise _os_problem(path, e, what) from None


def decode_utf8(data: bytes, path: str | Path, what: str = "file") -> str:
    """`data` as UTF-8 text (a leading BOM dropped); InputFileError naming the first bad byte."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputFileError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}; "
                             f"expected {what})") from None
    return text[1:] if text.startswith("\ufeff") else text


def read_text(path: str | Path, what: str = "a UTF-8 text file") -> str:
    """The UTF-8 text of `path` (see :func:`read_bytes`, :func:`decode_utf8`)."""
    return decode_utf8(read_bytes(path, what), path, what)


_JSON_TYPES = {dict: "an object", list: "a list"}


def read_json(path: str | Path, what: str = "a JSON file", expect: type | None = dict,
              require: dict[str, type | tuple[type, ...]] | None = None) -> Any:
    """Parse the JSON file `path`. With `expect`, the top-level value must be of that type; with
    `require` (key -> type), an object must hold those keys with values of those types.

    Raises:
        InputFileError: one line naming the file (and line) and the problem.
    """
    text = read_text(path, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputFileError(f"{path}:{e.lineno}: not valid JSON ({e.msg}; expected {what})") from None
    except RecursionError:
        raise InputFileError(f"{path}: JSON nested too deeply (expected {what})") from None
    if expect is not None and not isinstance(data, expect):
        got = _JSON_TYPES.get(type(data), type(data).__name__)
        raise InputFileError(f"{path}: holds {got}, not {_JSON_TYPES.get(expect, expect.__name__)} "
                             f"(expected {what})")
    for key, tp in (require or {}).items():
        if key not in data:
            raise InputFileError(f"{path}: no key {key!r} (expected {what})")
        if not isinstance(data[key], tp) or (tp in (int, float) and isinstance(data[key], bool)):
            raise InputFileError(f"{path}: key {key!r} holds {type(data[key]).__name__} (expected {what})")
    return data


_ST_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
              "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check_safetensors(path: str | Path, what: str = "a .safetensors file") -> dict:
    """Check the structure of a safetensors file without loading it: an 8-byte little-endian header
    length, a JSON object header, and tensors whose dtype, shape and byte ranges tile the data that
    follows exactly. Returns the header's ``__metadata__`` (a dict of strings, {} if absent).

    Raises:
        InputFileError: one line naming the file and what is wrong (missing, truncated, not safetensors).
    """
    path = Path(path)
    head = read_bytes(path, what, limit=8)
    size = path.stat().st_size
    bad = f"{path}: not {what}"
    if len(head) < 8:
        raise InputFileError(f"{bad} (only {len(head)} bytes; truncated?)")
    n = int.from_bytes(head, "little")
    if n > size - 8:
        raise InputFileError(f"{bad} (its header claims {n} bytes, the file holds {size - 8} after the "
                             "length; truncated?)")
    try:
        header = json.loads(read_bytes(path, what, limit=8 + n)[8:].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InputFileError(f"{bad} (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise InputFileError(f"{bad} (its header is not a JSON object)")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise InputFileError(f"{bad} (its __metadata__ is not an object of strings)")
    spans = []
    for name, t in header.items():
        ok = (isinstance(t, dict) and t.get("dtype") in _ST_DTYPES and isinstance(t.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in t["shape"])
              and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) for o in t["data_offsets"]))
        if not ok:
            raise InputFileError(f"{bad} (tensor {str(name)[:40]!r} has no valid dtype, shape and data_offsets)")
        lo, hi = t["data_offsets"]
        nbytes = _ST_DTYPES[t["dtype"]] * int(np.prod(t["shape"], dtype=object))
        if not 0 <= lo <= hi or hi - lo != nbytes:
            raise InputFileError(f"{bad} (tensor {str(name)[:40]!r}: byte range [{lo}, {hi}) does not hold its "
                                 f"{t['dtype']} shape {t['shape']})")
        spans.append((lo, hi))
    spans.sort()
    end = 0
    for lo, hi in spans:
        if lo != end:
            raise InputFileError(f"{bad} (tensor data overlaps or leaves a gap at byte {end})")
        end = hi
    if end != size - 8 - n:
        raise InputFileError(f"{bad} (tensors need {end} bytes of data, the file holds {size - 8 - n}; "
                             "truncated?)")
    return meta


# --------------------------------------------------------------------------------------------
# Output folders
# --------------------------------------------------------------------------------------------

def check_out_dir(path: str | Path, flag: str = "--out") -> Path:
    """Check, before any work, that `path` is a folder kgsim can create or write into.

    Raises:
        OutputPathError: `path` (or a parent) is an existing file, or the nearest existing folder
            is not writable (a probe file is created and removed there to find out).
    """
    path = Path(path)
    shown = f"{flag} = {str(path)!r}"
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{shown}: is an existing file, not a folder; choose another {flag}")
    probe = path
    while not probe.exists():
        if probe.is_symlink():
            raise OutputPathError(f"{shown}: {str(probe)!r} is a broken link; choose another {flag}")
        probe = probe.parent
    if not probe.is_dir():
        raise OutputPathError(f"{shown}: {str(probe)!r} is a file, not a folder; choose another {flag}")
    try:
        tempfile.TemporaryFile(dir=probe).close()
    except OSError as e:
        where = "" if probe == path else f" (in {str(probe)!r})"
        raise OutputPathError(f"{shown}: cannot write there{where}: {e.strerror or e}; choose another {flag}") from None
    return path


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """Check, before any work, that file `path` can be written (not a folder; its folder passes
    :func:`check_out_dir`).

    Raises:
        OutputPathError: one line naming `flag` and the path.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{flag} = {str(path)!r}: is a folder, not a file; choose another {flag}")
    check_out_dir(path.parent, flag)
    return path
