"""Read files written by `torch.save` without importing torch and without running code from them.

A PyTorch checkpoint is a pickle whose tensors point (through "persistent ids") at raw storages kept
beside it. Two layouts exist:

* zip (torch >= 1.6): `<folder>/data.pkl`, `<folder>/data/<key>` (one raw storage per key) and
  `<folder>/byteorder`; `<folder>` is whatever name torch chose (the file's stem, "archive", ...).
* legacy (torch < 1.6, or `_use_new_zipfile_serialization=False`): five things one after another:
  pickled magic number, pickled protocol version, pickled sys_info, the object pickle, the pickled
  list of storage keys, then each storage in that order as an int64 element count plus raw bytes.

Unpickling is restricted to an explicit allow-list of globals (`ALLOWED_GLOBALS`): the tensor rebuild
functions, the typed storage classes, `collections.OrderedDict` and lmnt-com/diffwave's
`diffwave.params.AttrDict` (loaded as a plain dict). Any other global is refused with
`UnsafePickleError` before it is imported, so nothing a malicious file names can ever run.
Tensors come back as independent numpy arrays (storage location, e.g. "cuda:0", is ignored).
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["load_torch_pickle", "resolve_torch_file", "TorchPickleError", "UnsafePickleError", "ALLOWED_GLOBALS"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class TorchPickleError(ValueError):
    """The file is not a well-formed torch.save file."""


class UnsafePickleError(pickle.UnpicklingError):
    """The file's pickle names a global outside the allow-list; it was not imported or run."""


def _bfloat16() -> np.dtype:
    import ml_dtypes  # a TensorFlow dependency; only imported when a bfloat16 tensor shows up

    return np.dtype(ml_dtypes.bfloat16)


class _StorageType:
    """Stand-in for a `torch.<X>Storage` class: it only tells which dtype the raw bytes hold."""

    def __init__(self, name: str, dtype: str | Callable[[], np.dtype]) -> None:
        self.name = name
        self._dtype = dtype

    @property
    def dtype(self) -> np.dtype:
        return self._dtype() if callable(self._dtype) else np.dtype(self._dtype)

    def __repr__(self) -> str:
        return f"torch.{self.name}"


_STORAGE_TYPES: dict[str, _StorageType] = {
    name: _StorageType(name, dtype) for name, dtype in {
        "FloatStorage": "f4", "DoubleStorage": "f8", "HalfStorage": "f2",
        "BFloat16Storage": _bfloat16, "LongStorage": "i8", "IntStorage": "i4",
        "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1", "BoolStorage": "?",
        "ComplexFloatStorage": "c8", "ComplexDoubleStorage": "c16",
    }.items()
}


class _Storage:
    """A loaded storage as a flat array in this machine's byte order."""

    def __init__(self, raw: bytes, dtype: np.dtype, big_endian: bool, where: str) -> None:
        if len(raw) % dtype.itemsize:
            raise TorchPickleError(
                f"storage {where} has {len(raw)} bytes, not a multiple of its {dtype} element size "
                f"{dtype.itemsize}")
        if big_endian != (sys.byteorder == "big") and dtype.itemsize > 1:
            # Swap each scalar (each half of a complex) through unsigned ints: works for every
            # dtype, bfloat16 included.
            unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
            raw = np.frombuffer(raw, dtype=f"u{unit}").byteswap().tobytes()
        self.array = np.frombuffer(raw, dtype=dtype)
        self.where = where


def _rebuild_tensor(storage: _Storage, storage_offset: int, size: tuple, stride: tuple) -> np.ndarray:
    if not isinstance(storage, _Storage):
        raise TorchPickleError(f"tensor rebuild expected a storage, got {type(storage).__name__}")
    values = [storage_offset, *size, *stride]
    if (not isinstance(size, tuple) or not isinstance(stride, tuple) or len(size) != len(stride)
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)):
        raise TorchPickleError(
            f"invalid tensor geometry in storage {storage.where}: offset={storage_offset!r}, "
            f"size={size!r}, stride={stride!r}")
    flat = storage.array
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise TorchPickleError(
            f"tensor (offset {storage_offset}, size {size}, stride {stride}) reaches element {last} "
            f"of storage {storage.where}, which holds only {flat.size}")
    view = np.lib.stride_tricks.as_strided(
        flat[storage_offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride),
        writeable=False)
    return np.array(view, order="C")  # an owned copy: nothing aliases the file's buffers


def _rebuild_tensor_v2(storage: _Storage, storage_offset: int, size: tuple, stride: tuple,
                       requires_grad: bool = False, backward_hooks: Any = None,
                       metadata: Any = None) -> np.ndarray:
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: np.ndarray, requires_grad: bool = True,
                       backward_hooks: Any = None) -> np.ndarray:
    if not isinstance(data, np.ndarray):
        raise TorchPickleError(f"parameter rebuild expected a tensor, got {type(data).__name__}")
    return data


class _AttrDictStandIn(dict):
    """Receives a pickled `diffwave.params.AttrDict`; replaced by a plain dict after loading.

    The reference's AttrDict pickles as NEWOBJ + items + BUILD(state=itself); the state adds
    nothing beyond the items, so it is merged (never set as attributes).
    """

    def __setstate__(self, state: Any) -> None:
        if state is not self and isinstance(state, dict):
            self.update(state)


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("diffwave.params", "AttrDict"): _AttrDictStandIn,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


_TENSOR_REBUILDERS = (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter)


def _skip_tensor(*args: Any) -> None:
    """Tensor rebuild during a scan that only records storage types."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, source: str,
                 load_storage: Callable[[_StorageType, str, tuple], Any] | None,
                 rebuild_tensors: bool = True) -> None:
        super().__init__(file)
        self._source = source
        self._load_storage = load_storage
        self._rebuild_tensors = rebuild_tensors

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load global '{module}.{name}' from checkpoint {self._source}: a checkpoint "
                f"of weights needs only tensors and plain containers, so only "
                f"{sorted(f'{m}.{n}' for m, n in ALLOWED_GLOBALS)} are allowed. Nothing from the "
                f"file was imported or executed.") from None
        if not self._rebuild_tensors and found in _TENSOR_REBUILDERS:
            return _skip_tensor
        return found

    def persistent_load(self, pid: Any) -> Any:
        if (self._load_storage is None or not isinstance(pid, tuple) or len(pid) < 5
                or pid[0] != "storage" or not isinstance(pid[1], _StorageType)
                or not isinstance(pid[2], str)):
            raise TorchPickleError(
                f"unexpected persistent id {pid!r} in checkpoint {self._source}; expected "
                f"('storage', torch.<X>Storage, key, location, numel, ...)")
        return self._load_storage(pid[1], pid[2], pid)

    def load(self) -> Any:
        try:
            return super().load()
        except (UnsafePickleError, TorchPickleError):
            raise
        except Exception as err:  # e.g. REDUCE on something that is not callable, truncated data
            raise TorchPickleError(
                f"malformed pickle in checkpoint {self._source}: {type(err).__name__}: {err}") from None


def _plain(obj: Any, memo: dict[int, Any] | None = None) -> Any:
    """Replace every AttrDict stand-in by a plain dict, keeping shared references shared."""
    memo = {} if memo is None else memo
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, _AttrDictStandIn):
        out: dict = {}
        memo[id(obj)] = out
        out.update((k, _plain(v, memo)) for k, v in obj.items())
        return out
    if isinstance(obj, dict):
        memo[id(obj)] = obj
        for key, value in obj.items():
            obj[key] = _plain(value, memo)
        return obj
    if isinstance(obj, list):
        memo[id(obj)] = obj
        obj[:] = [_plain(v, memo) for v in obj]
        return obj
    if isinstance(obj, tuple):
        out_t = tuple(_plain(v, memo) for v in obj)
        memo[id(obj)] = out_t
        return out_t
    return obj


def resolve_torch_file(path: str | os.PathLike) -> Path:
    """The file to read: `path` itself, or `path/weights.pt` for a model directory (symlinks followed)."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "weights.pt"
        if not candidate.exists():
            found = sorted(p.name for p in path.glob("*.pt"))
            raise FileNotFoundError(
                f"model directory {path} has no weights.pt (the link lmnt-com/diffwave's learner "
                f"writes); .pt files there: {found or 'none'}; pass one of them directly")
        path = candidate
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist" +
                                (" (dangling symlink)" if path.is_symlink() else ""))
    return path


def _load_zip(data: bytes, source: str) -> Any:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise TorchPickleError(
                f"{source} is a zip file but not a torch checkpoint: expected exactly one "
                f"'<folder>/data.pkl', found {pickles or 'none'}")
        prefix = pickles[0][: -len("data.pkl")]
        byteorder = (archive.read(prefix + "byteorder").decode().strip()
                     if prefix + "byteorder" in names else "little")
        if byteorder not in ("little", "big"):
            raise TorchPickleError(f"{source}: unknown byteorder {byteorder!r}")
        raw_cache: dict[str, bytes] = {}

        def load_storage(storage_type: _StorageType, key: str, pid: tuple) -> _Storage:
            member = f"{prefix}data/{key}"
            if key not in raw_cache:
                if member not in names:
                    raise TorchPickleError(f"{source}: storage '{member}' is missing")
                raw_cache[key] = archive.read(member)
            return _Storage(raw_cache[key], storage_type.dtype, byteorder == "big", f"'{member}'")

        return _RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), source, load_storage).load()


def _load_legacy(data: bytes, source: str) -> Any:
    stream = io.BytesIO(data)

    def header_pickle(what: str) -> Any:
        try:
            return _RestrictedUnpickler(stream, source, None).load()
        except TorchPickleError:
            raise TorchPickleError(f"{source}: unreadable {what} in a legacy torch.save file") from None

    not_torch = (f"{source} is not a torch checkpoint: neither a zip archive nor a legacy torch.save "
                 f"file (which starts with the pickled magic number {_LEGACY_MAGIC:#x})")
    try:
        magic = _RestrictedUnpickler(stream, source, None).load()
    except TorchPickleError:
        raise TorchPickleError(not_torch) from None
    if magic != _LEGACY_MAGIC:
        raise TorchPickleError(not_torch)
    protocol = header_pickle("protocol version")
    if protocol != _LEGACY_PROTOCOL:
        raise TorchPickleError(f"{source}: legacy protocol {protocol!r}, expected {_LEGACY_PROTOCOL}")
    sys_info = header_pickle("sys_info")
    big_endian = isinstance(sys_info, dict) and sys_info.get("little_endian") is False

    # The storages' bytes follow the object pickle, and their sizes depend on the dtypes named inside
    # it. Pass 1 reads the object pickle (same allow-list) only to record each storage's type.
    object_start = stream.tell()
    storage_types: dict[str, _StorageType] = {}

    def record(storage_type: _StorageType, key: str, pid: tuple) -> None:
        storage_types.setdefault(key, storage_type)

    _RestrictedUnpickler(stream, source, record, rebuild_tensors=False).load()
    keys = header_pickle("storage key list")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise TorchPickleError(f"{source}: storage key list is not a list of strings: {keys!r}")
    raw_storages: dict[str, bytes] = {}
    for key in keys:
        if key not in storage_types:  # its element size is unknown, so nothing after it can be found
            raise TorchPickleError(f"{source}: storage '{key}' is not referenced by any tensor")
        header = stream.read(8)
        if len(header) != 8:
            raise TorchPickleError(f"{source}: file ends before storage '{key}'")
        (count,) = struct.unpack(">q" if big_endian else "<q", header)
        nbytes = count * storage_types[key].dtype.itemsize
        raw = stream.read(nbytes) if count >= 0 else b""
        if count < 0 or len(raw) != nbytes:
            raise TorchPickleError(
                f"{source}: storage '{key}' should hold {count} elements ({nbytes} bytes), "
                f"the file has {len(raw)}")
        raw_storages[key] = raw

    def load_storage(storage_type: _StorageType, key: str, pid: tuple) -> _Storage:
        if key not in raw_storages:
            raise TorchPickleError(f"{source}: a tensor refers to storage '{key}', which is not stored")
        storage = _Storage(raw_storages[key], storage_type.dtype, big_endian, f"'{key}'")
        view = pid[5] if len(pid) > 5 else None
        if view is not None:  # torch < 1.0 storage views: (view_key, offset, size) into this storage
            if (not isinstance(view, tuple) or len(view) != 3
                    or not all(isinstance(v, int) and v >= 0 for v in view[1:])
                    or view[1] + view[2] > storage.array.size):
                raise TorchPickleError(f"{source}: invalid view {view!r} of storage '{key}'")
            storage.array = storage.array[view[1]:view[1] + view[2]]
        return storage

    stream.seek(object_start)
    return _RestrictedUnpickler(stream, source, load_storage).load()


def load_torch_pickle(path: str | os.PathLike) -> Any:
    """Load what `torch.save` wrote at `path` (file, symlink or model directory), torch-free and safely.

    Tensors become numpy arrays (own memory, native byte order, torch's dtype); containers stay
    dicts / OrderedDicts / lists / tuples; a pickled `diffwave.params.AttrDict` becomes a dict.
    Raises `UnsafePickleError` for any global outside `ALLOWED_GLOBALS`, and
    `TorchPickleError` for a file that is not a torch checkpoint.
    """
    path = resolve_torch_file(path)
    data = path.read_bytes()
    # Errors name both the path given and the file a (weights.pt) symlink points at.
    source = f"{path} -> {path.resolve()}" if path.is_symlink() else str(path)
    result = (_load_zip if data[:4] == b"PK\x03\x04" else _load_legacy)(data, source)
    return _plain(result)
