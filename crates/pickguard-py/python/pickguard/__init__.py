"""pickguard: scan model files without running them, and load checkpoint
tensors without pickle.

>>> import pickguard
>>> report = pickguard.scan("model.pt")
>>> report.verdict, report.rule_ids
('clean', [])
>>> state = pickguard.load("model.pt")          # instead of torch.load(...)
>>> model.load_state_dict(state)

Nothing in a scanned or loaded file is executed or imported: :func:`load`
rebuilds tensors from the pickle's structure with pickguard's restricted
builder, after the scanner has judged the file pure tensor data, and raises
:class:`RefusedError` (naming the globals and their offsets) for anything
else. It does not use Python's or torch's unpickler at all.
"""

from __future__ import annotations

import json as _json
import os as _os
from dataclasses import dataclass as _dataclass
from typing import Any, Iterator, Optional, Sequence, Union

from . import _native
from ._report import Finding, GlobalUse, Location, Report
from .errors import (
    ConversionError,
    FormatError,
    InternalError,
    PickguardError,
    RefusedError,
    UnsupportedError,
    VerificationError,
)

__version__: str = _native.__version__

__all__ = [
    "scan",
    "scan_tree",
    "load",
    "convert",
    "hash",
    "verify",
    "Report",
    "Finding",
    "Location",
    "GlobalUse",
    "Opaque",
    "Conversion",
    "Manifest",
    "Verification",
    "PickguardError",
    "RefusedError",
    "FormatError",
    "UnsupportedError",
    "VerificationError",
    "ConversionError",
    "InternalError",
]

PathLike = Union[str, "_os.PathLike[str]"]
_BYTES = (bytes, bytearray, memoryview)


def _policy_args(policy: Optional[PathLike], allow: Sequence[str]) -> tuple[Optional[str], list[str]]:
    if isinstance(allow, str):
        raise TypeError("allow takes a list of 'module.name' patterns, not one string")
    return (_os.fspath(policy) if policy is not None else None, list(allow))


def scan_tree(
    path: PathLike,
    *,
    policy: Optional[PathLike] = None,
    allow: Sequence[str] = (),
    timeout: float = 120.0,
    follow_links: bool = True,
) -> Iterator[Report]:
    """Scan every file under ``path`` (a directory or a file), one report per
    file, in name order; unreadable entries (a FIFO in the tree, a symlink
    loop) are reports with verdict ``error``, never skipped silently."""
    config, allow_l = _policy_args(policy, allow)
    _native.check_policy(config, allow_l)
    files, errors = _native.walk([_os.fspath(path)], follow_links)
    for f in files:
        yield Report._from_dict(_json.loads(_native.scan_file(f, config, allow_l, timeout)))
    for e in errors:
        yield Report._from_dict(_json.loads(e))


def scan(
    target: Union[PathLike, bytes, bytearray, memoryview],
    *,
    policy: Optional[PathLike] = None,
    allow: Sequence[str] = (),
    timeout: float = 120.0,
    name: str = "<bytes>",
) -> Union[Report, Iterator[Report]]:
    """Scan a model file, a directory, or bytes in memory.

    Returns a :class:`Report` for a file or bytes, and an iterator of
    reports for a directory (as :func:`scan_tree`). ``policy`` is a policy
    file (TOML, as ``pickguard scan --config``); ``allow`` adds
    ``module.name`` or ``module.*`` patterns. The type of the result is
    ``Report | Iterator[Report]``; use :func:`scan_tree` for always an iterator.
    """
    config, allow_l = _policy_args(policy, allow)
    if isinstance(target, _BYTES):
        if isinstance(target, bytes) and len(target) < 4096 and _os.path.exists(target):
            # os functions take bytes paths: scanning the path's own bytes
            # would report on the wrong thing, so refuse to guess.
            raise TypeError(
                "bytes are scanned as file content, and these name an existing file: "
                "pass the path as str (os.fsdecode(path)), or the content with name="
            )
        raw = _native.scan_bytes(bytes(target), name, config, allow_l, timeout)
        return Report._from_dict(_json.loads(raw))
    p = _os.fspath(target)
    if _os.path.isdir(p):
        return scan_tree(p, policy=policy, allow=allow, timeout=timeout)
    return Report._from_dict(_json.loads(_native.scan_file(p, config, allow_l, timeout)))


@_dataclass(frozen=True)
class Opaque:
    """A plain value of the checkpoint that has no Python form pickguard
    rebuilds (bytes, a complex number, a NumPy scalar...): described only."""

    description: str


_TORCH = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
    "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64",
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "C64": "complex64",
}
_NUMPY = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16",
    "U32": "uint32", "I32": "int32", "U64": "uint64", "I64": "int64",
    "F16": "float16", "F32": "float32", "F64": "float64", "C64": "complex64",
}
# NumPy has no types for these; ml_dtypes (used by JAX) does.
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _select(tree: Any, key: Optional[str]) -> Any:
    if key is None or key in ("", "."):
        return tree
    cur = tree
    for part in key.split("."):
        if not isinstance(cur, dict):
            raise KeyError(f"key {key!r}: {part!r} is not inside a dictionary")
        if part not in cur:
            names = ", ".join(list(cur)[:20])
            raise KeyError(f"key {key!r}: no {part!r}; keys here: {names}")
        cur = cur[part]
    return cur


def _torch_maker(specs: list, storages: dict, map_location: Any):
    import torch

    if map_location is None:
        device = torch.device("cpu")
    elif isinstance(map_location, (str, torch.device)):
        device = torch.device(map_location)
    else:
        raise TypeError(
            "map_location must be a device (a string such as 'cpu' or 'cuda:0', or a torch.device)"
        )
    bases: dict[str, Any] = {}

    def base(key: str):
        b = bases.get(key)
        if b is None:
            buf = storages[key]
            if len(buf) == 0:
                b = torch.empty(0, dtype=torch.uint8)
            else:
                b = torch.frombuffer(buf, dtype=torch.uint8)
            # Move whole storages, so tensors that share one stay shared.
            if b.device != device:
                b = b.to(device)
            bases[key] = b
        return b

    def make(i: int):
        dtype_name, shape, strides, offset, key = specs[i]
        dtype = getattr(torch, _TORCH[dtype_name], None)
        if dtype is None:
            raise UnsupportedError(f"this torch has no dtype {_TORCH[dtype_name]}")
        b = base(key)
        size = torch.empty((), dtype=dtype).element_size()
        whole = b[: len(b) - len(b) % size].view(dtype)
        return whole.as_strided(shape, strides, offset)

    return make


def _numpy_maker(specs: list, storages: dict):
    import numpy as np

    def make(i: int):
        dtype_name, shape, strides, offset, key = specs[i]
        if dtype_name in _NUMPY:
            dt = np.dtype(_NUMPY[dtype_name])
        else:
            try:
                import ml_dtypes
            except ImportError:
                raise UnsupportedError(
                    f"a {dtype_name} tensor has no NumPy dtype; install ml_dtypes, or use backend='torch'"
                ) from None
            dt = np.dtype(getattr(ml_dtypes, _ML_DTYPES[dtype_name]))
        buf = storages[key]
        raw = np.frombuffer(buf, dtype=np.uint8) if len(buf) else np.zeros(0, dtype=np.uint8)
        whole = raw[: len(raw) - len(raw) % dt.itemsize].view(dt)
        return np.lib.stride_tricks.as_strided(
            whole[offset:],
            shape=tuple(shape),
            strides=tuple(s * dt.itemsize for s in strides),
            writeable=True,
        )

    return make


def load(
    path: PathLike,
    *,
    map_location: Any = "cpu",
    key: Optional[str] = None,
    backend: str = "torch",
) -> Any:
    """Load a checkpoint's tensors without pickle: a drop-in for
    ``torch.load(path, weights_only=True)`` on state dicts.

    The file (a torch zip or legacy checkpoint, a NumPy ``.npz``, or a
    safetensors file) is
    scanned first; anything that is not pure tensor data raises
    :class:`RefusedError` naming the globals and their offsets, and nothing
    is loaded or run. The values are then rebuilt by pickguard's restricted
    builder: dictionaries and lists as ``dict`` and ``list`` (dictionary keys
    as strings), numbers, strings and ``None`` as themselves, tensors as
    ``torch.Tensor`` (``backend="torch"``) or ``numpy.ndarray``
    (``backend="numpy"``, torch not needed), sharing memory where the
    checkpoint shares storage (tied weights stay tied). Values with no plain
    form are :class:`Opaque`. Where torch would give richer types, pickguard
    gives plain ones: tuples and sets are lists, ``torch.float32`` or a
    device is its name as a string, an ``nn.Parameter`` is a plain tensor
    (``requires_grad`` is not kept), and integer dictionary keys are strings
    (a dictionary with both ``1`` and ``"1"`` is refused rather than losing a
    value). A value referenced many times is rebuilt each time, up to two
    million values in all (more raises :class:`UnsupportedError`: a small
    file cannot expand without bound); nesting is limited to 200 levels.

    ``key`` selects a sub-dictionary by dotted path (``"state_dict"``,
    ``"model.encoder"``); ``map_location`` is a device (``"cpu"``,
    ``"cuda:0"``, a ``torch.device``).
    """
    if backend not in ("torch", "numpy"):
        raise ValueError(f"backend must be 'torch' or 'numpy', not {backend!r}")
    if backend == "numpy" and map_location not in ("cpu", None):
        raise ValueError("map_location is for backend='torch'; NumPy arrays live in host memory")
    tree, specs, storages = _native.load(_os.fspath(path))
    tree = _select(tree, key)
    make = (
        _torch_maker(specs, storages, map_location)
        if backend == "torch"
        else _numpy_maker(specs, storages)
    )
    made: dict[int, Any] = {}

    def rebuild(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: rebuild(v) for k, v in o.items()}
        if isinstance(o, list):
            return [rebuild(v) for v in o]
        if isinstance(o, tuple):
            kind, payload = o
            if kind == 1:
                return Opaque(payload)
            t = made.get(payload)
            if t is None:
                t = made[payload] = make(payload)
            return t
        return o

    return rebuild(tree)


@_dataclass(frozen=True)
class Conversion:
    """What happened to one checkpoint in :func:`convert`."""

    input: str
    #: ``converted``, ``refused`` or ``error``.
    status: str
    output: Optional[str] = None
    tensors: int = 0
    bytes: int = 0
    #: Why it was refused or failed.
    message: Optional[str] = None
    #: Everything ``pickguard convert --format json`` says about it.
    details: Optional[dict] = None


def convert(
    src: PathLike,
    dst: Optional[PathLike] = None,
    *,
    key: Optional[str] = None,
    strip_prefixes: Sequence[str] = (),
    shared: str = "alias",
    extra_json: Optional[PathLike] = None,
    overwrite: bool = False,
    check: bool = True,
) -> list[Conversion]:
    """Convert a checkpoint (or a sharded checkpoint directory, or a directory
    of checkpoints) to safetensors without running its code, as
    ``pickguard convert``. ``dst`` defaults to ``src`` with the suffix
    ``.safetensors`` (a directory for directories).

    Returns one :class:`Conversion` per checkpoint. With ``check`` (the
    default), raises :class:`ConversionError` (its ``outcomes`` are all of
    them) when any was refused or failed.
    """
    raw = _native.convert(
        _os.fspath(src),
        _os.fspath(dst) if dst is not None else None,
        key,
        list(strip_prefixes),
        shared,
        _os.fspath(extra_json) if extra_json is not None else None,
        overwrite,
    )
    out = []
    for o in _json.loads(raw):
        out.append(
            Conversion(
                input=o["input"],
                status=o["status"],
                output=o.get("output"),
                tensors=o.get("tensors", 0),
                bytes=o.get("bytes", 0),
                message=o.get("message"),
                details=o,
            )
        )
    bad = [o for o in out if o.status != "converted"]
    if check and bad:
        lines = "\n".join(f"{o.input}: {o.status}: {o.message}" for o in bad)
        raise ConversionError(f"{len(bad)} of {len(out)} checkpoint(s) not converted:\n{lines}", out)
    return out


@_dataclass(frozen=True)
class Manifest:
    """A model's OpenSSF model-signing manifest."""

    model: str
    root_digest: str
    hash_type: str
    #: ``(file name, sha256 hex)`` in manifest order.
    resources: tuple[tuple[str, str], ...]
    ignore_paths: tuple[str, ...] = ()


def hash(
    model: PathLike, *, ignore_paths: Sequence[str] = (), allow_symlinks: bool = False
) -> Manifest:
    """Hash a model file or directory as OpenSSF model signing does
    (``pickguard hash``): each file's SHA-256 and the root digest."""
    d = _json.loads(_native.hash(_os.fspath(model), list(ignore_paths), allow_symlinks))
    return Manifest(
        model=d["model"],
        root_digest=d["root_digest"],
        hash_type=d["hash_type"],
        resources=tuple((r["name"], r["digest"]) for r in d["resources"]),
        ignore_paths=tuple(d.get("ignore_paths") or ()),
    )


@_dataclass(frozen=True)
class Verification:
    """The answer of :func:`verify`: ``ok`` only when the signature is valid
    and the files match exactly."""

    ok: bool
    signature_valid: bool
    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]
    problems: tuple[str, ...]
    files_checked: int

    def __bool__(self) -> bool:
        return self.ok


def verify(
    model: PathLike,
    signature: PathLike,
    *,
    public_key: Optional[PathLike] = None,
    cert_chain: Sequence[PathLike] = (),
    ignore_paths: Sequence[str] = (),
    allow_symlinks: bool = False,
    ignore_unsigned_files: bool = False,
) -> Verification:
    """Verify a model against an OpenSSF model-signing bundle
    (``pickguard verify``), trusting a PEM public key or a certificate chain
    (PEM files, the root last). A mismatch is a result (``ok`` False, with
    what was added, removed or changed); a bundle that cannot be checked
    raises :class:`VerificationError`."""
    if (public_key is None) == (not cert_chain):
        raise ValueError("give public_key or cert_chain (exactly one)")
    d = _json.loads(
        _native.verify(
            _os.fspath(model),
            _os.fspath(signature),
            _os.fspath(public_key) if public_key is not None else None,
            [_os.fspath(c) for c in cert_chain],
            list(ignore_paths),
            allow_symlinks,
            ignore_unsigned_files,
        )
    )
    return Verification(
        ok=d["ok"],
        signature_valid=d["signature_valid"],
        added=tuple(d["added"]),
        removed=tuple(d["removed"]),
        changed=tuple(d["changed"]),
        problems=tuple(d["problems"]),
        files_checked=d["files_checked"],
    )
