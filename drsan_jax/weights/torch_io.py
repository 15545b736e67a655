"""Reads PyTorch and safetensors weight files into NumPy arrays, safely and without torch.

Three containers are understood, told apart by their first bytes:

* PyTorch's zip archive (what `torch.save` writes since torch 1.6): `<prefix>/data.pkl` is a
  pickle of the saved object in which every storage is replaced by a *persistent id*
  `('storage', storage_type, key, location, numel)`; `<prefix>/data/<key>` holds that
  storage's raw bytes and `<prefix>/byteorder` says "little" or "big" (archives without it
  are little-endian).
* PyTorch's legacy format (torch <= 1.5, or `_use_new_zipfile_serialization=False`): a
  sequence of pickles -- the magic number 0x1950a86a20f9469cfc6c, the protocol version 1001,
  a dict of system information, the saved object (persistent ids
  `('storage', storage_type, key, location, numel, view_metadata)`), the list of storage
  keys -- followed, for each key in that order, by an 8-byte little-endian element count and
  the storage's raw little-endian bytes.
* safetensors: an 8-byte little-endian header length, a JSON header mapping each name to
  `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets counted from the end of the
  header), then the raw little-endian data.

Safety: a pickle can name any importable callable and have the unpickler call it, so loading
one with `pickle.load` runs whatever the file's author chose. Pickles here are read by
`_RestrictedUnpickler`, whose `find_class` resolves only the names in `_ALLOWED_GLOBALS` --
plain containers, torch's tensor/parameter rebuild functions and its storage and dtype names,
the torch ones mapped to inert stand-ins defined in this module, all of them immutable (see
`_Frozen`) -- and refuses anything else with a `WeightFileError` before it can be called. A
tensor is first unpickled as a reference (storage, offset, shape, strides) and becomes an
array only after every storage is read, once it is checked to lie entirely inside its
storage.

Size limits: a weights file is inflated and read only up to sizes checked first. Its arrays
may hold `max_weight_bytes()` in all (512 MiB; the largest network of the zoo, EDSR x4 with
43 M parameters, is 172 MB in float32, three times that with Adam's moments); the environment
variable `DRSAN_JAX_MAX_WEIGHT_BYTES` sets another. A zip record is never inflated past the
size its directory entry states, and those sizes are checked before anything is inflated: a
file of a megabyte claiming a gigabyte is refused without allocating it.

Every array returned owns its memory (none is a view into a file buffer). dtypes are kept as
saved: float16 stays float16 and bfloat16 comes back as `ml_dtypes.bfloat16` (the NumPy
bfloat16 that JAX uses), so nothing is rounded or widened; call `.astype(np.float32)` where
float32 is wanted.

Typical use::

    state = read_state_dict("RealESRGAN_x4plus.pth")   # {"conv_first.weight": ndarray, ...}
"""

from __future__ import annotations

import collections
import io
import json
import math
import os
import pickle
import pickletools
import struct
import sys
import zipfile
from typing import IO, Any

import ml_dtypes
import numpy as np

from drsan_jax.limits import env_limit
from drsan_jax.weights.errors import WeightsError

MAX_WEIGHT_BYTES_ENV = "DRSAN_JAX_MAX_WEIGHT_BYTES"
DEFAULT_MAX_WEIGHT_BYTES = 512 << 20
# The largest pickle record read: a state dict's pickle (names and shapes) is kilobytes.
_MAX_PICKLE_BYTES = 64 << 20


def max_weight_bytes() -> int:
    """The most bytes a file's arrays may hold: `DRSAN_JAX_MAX_WEIGHT_BYTES`, else 512 MiB.

    Raises:
      ValueError: the variable is set to something other than a positive integer.
    """
    return env_limit(MAX_WEIGHT_BYTES_ENV, DEFAULT_MAX_WEIGHT_BYTES, "bytes")


def _over_limit(what: str, size: int) -> str:
    return (f"{what} {size:,} bytes, over the limit of {max_weight_bytes():,} (set "
            f"{MAX_WEIGHT_BYTES_ENV} to a larger number of bytes to read it)")

__all__ = [
    "DEFAULT_MAX_WEIGHT_BYTES",
    "LEGACY_MAGIC",
    "MAX_WEIGHT_BYTES_ENV",
    "WRAPPER_KEYS",
    "WeightFileError",
    "max_weight_bytes",
    "read_checkpoint",
    "read_state_dict",
    "unwrap_state_dict",
]

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Keys under which training code nests the weights, in order of preference. BasicSR (and so
# ESRGAN, SwinIR, ... checkpoints) saves both "params" and "params_ema"; the EMA weights are
# the ones its authors evaluate and publish, so they win.
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")

# The safetensors reference implementation refuses headers above 100 MB; so do we, so that a
# corrupt length cannot make us allocate gigabytes for JSON.
_MAX_SAFETENSORS_HEADER = 100_000_000

# The most elements a tensor with overlapping elements (an expanded view) is copied into.
_MAX_EXPANDED_ELEMENTS = 2**26

_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)

# torch dtype names as they appear in pickles (`torch.float16` pickles as `torch float16`).
_TORCH_DTYPES: dict[str, np.dtype] = {
    "float64": np.dtype(np.float64),
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": _BFLOAT16,
    "int64": np.dtype(np.int64),
    "int32": np.dtype(np.int32),
    "int16": np.dtype(np.int16),
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "uint16": np.dtype(np.uint16),
    "uint32": np.dtype(np.uint32),
    "uint64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
    "complex64": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
}

# Typed storage classes, named `torch.<Name>` in pickles whatever the device they came from.
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64",
}

_SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": _BFLOAT16,
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U64": np.dtype(np.uint64),
    "U32": np.dtype(np.uint32),
    "U16": np.dtype(np.uint16),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}


class WeightFileError(WeightsError):
    """A weight file that cannot be read: missing, truncated, malformed, unsupported or unsafe.

    The message always starts with the file's path.
    """


class _Malformed(Exception):
    """Raised where the path is not at hand; `read_checkpoint` turns it into WeightFileError."""


def _error(path: Any, message: str) -> WeightFileError:
    return WeightFileError(f"{os.fspath(path)}: {message}")


# --- Inert stand-ins for the torch objects a checkpoint pickle may name -------------------


class _Frozen:
    """Base of every object the unpickler hands out or builds: immutable, fields in __slots__.

    A pickle's BUILD opcode updates whatever object is on its stack: it calls `__setstate__`,
    or else sets attributes. Were the allow-list's objects plain functions or dataclasses
    (frozen, slotted dataclasses get a `__setstate__` that bypasses `frozen`), one file could
    rewrite them -- a function's `__defaults__`, a storage type's dtype -- for every later
    load in the process. Here both ways raise.
    """

    __slots__ = ()

    def __init__(self, *values: Any) -> None:
        for name, value in zip(self.__slots__, values, strict=True):
            object.__setattr__(self, name, value)

    def _fields(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._fields() == self._fields()

    def __hash__(self) -> int:
        return hash((type(self), self._fields()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}{self._fields()!r}"

    def _refuse(self) -> _Malformed:
        what = getattr(self, "name", type(self).__name__.lstrip("_"))
        return _Malformed(f"the pickle tries to modify {what} (BUILD on an immutable object)")

    def __setattr__(self, name: str, value: Any) -> None:
        raise self._refuse()

    def __delattr__(self, name: str) -> None:
        raise self._refuse()

    def __setstate__(self, state: Any) -> None:
        raise self._refuse()


class _Allowed(_Frozen):
    """An allow-listed callable (OrderedDict, a tensor rebuild function, ...), wrapped so that
    the pickle cannot modify it (see `_Frozen`)."""

    __slots__ = ("name", "func")

    def __call__(self, *args: Any) -> Any:
        return self.func(*args)


class _DtypeName(_Frozen):
    """What `torch.float32` and friends unpickle to: (name, NumPy dtype)."""

    __slots__ = ("name", "dtype")


class _StorageType(_Frozen):
    """What `torch.FloatStorage` and friends (and `UntypedStorage`: bytes) unpickle to:
    (name, NumPy dtype of an element)."""

    __slots__ = ("name", "dtype")


class _StorageRef(_Frozen):
    """A storage named by a persistent id; its bytes are read after the pickle.

    Fields:
      key: the root storage's key (its zip record name, or its legacy key).
      dtype: the element type the storage was saved with.
      offset: in elements of `dtype`, where this (legacy view) storage starts in its root.
      numel: its length in elements of `dtype`.
    """

    __slots__ = ("key", "dtype", "offset", "numel")


class _TensorRef(_Frozen):
    """A tensor as `torch._utils._rebuild_tensor*` describes it: (storage, offset, shape,
    strides, dtype). Offset and strides count elements of `dtype`, which differs from the
    storage's only over byte (untyped) storages; they are checked when materialised."""

    __slots__ = ("storage", "offset", "shape", "strides", "dtype")


def _as_tuple(value: Any, what: str) -> tuple:
    if not isinstance(value, (tuple, list)):
        raise _Malformed(f"tensor {what} is a {type(value).__name__}, not a tuple")
    return tuple(value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any) -> _TensorRef:
    """Stand-in for `torch._utils._rebuild_tensor` (torch <= 0.4)."""
    if not isinstance(storage, _StorageRef):
        raise _Malformed(f"a tensor's storage is a {type(storage).__name__}, not a storage")
    return _TensorRef(storage, storage_offset, _as_tuple(size, "size"),
                      _as_tuple(stride, "stride"), storage.dtype)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _TensorRef:
    """Stand-in for `torch._utils._rebuild_tensor_v2`; gradient flags and hooks do not matter
    for weights."""
    del requires_grad, backward_hooks, metadata
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any, backward_hooks: Any, dtype: Any,
                       metadata: Any = None) -> _TensorRef:
    """Stand-in for `torch._utils._rebuild_tensor_v3`: torch >= 2.3 writes it for dtypes that
    have no typed storage class (uint16, uint32, uint64), over an untyped byte storage."""
    del requires_grad, backward_hooks, metadata
    if not isinstance(dtype, _DtypeName):
        raise _Malformed(f"_rebuild_tensor_v3 got a {type(dtype).__name__}, not a dtype")
    ref = _rebuild_tensor(storage, storage_offset, size, stride)
    return _TensorRef(ref.storage, ref.offset, ref.shape, ref.strides, dtype.dtype)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any,
                       state: Any = None) -> _TensorRef:
    """Stand-in for `torch._utils._rebuild_parameter[_with_state]`: a Parameter's weights are
    its data tensor."""
    del requires_grad, backward_hooks, state
    if not isinstance(data, _TensorRef):
        raise _Malformed(f"a parameter holds a {type(data).__name__}, not a tensor")
    return data


def _torch_size(dims: Any = ()) -> tuple:
    """Stand-in for `torch.Size`, which pickles as `torch.Size((d0, d1, ...))`."""
    return _as_tuple(dims, "size")


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Stand-in for `_codecs.encode`, which protocol-2 pickles use to rebuild `bytes` values;
    only the latin-1 form they use is accepted (other codecs could do arbitrary work)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _Malformed(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


_ALLOWED_CALLABLES: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    # Python 2 pickles (torch 0.4 era) name the builtins module `__builtin__`.
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
    ("torch", "Size"): _torch_size,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
_ALLOWED_GLOBALS: dict[tuple[str, str], _Frozen] = {
    (module, name): _Allowed(f"{module}.{name}", func)
    for (module, name), func in _ALLOWED_CALLABLES.items()}
_ALLOWED_GLOBALS.update({
    ("torch", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype(np.uint8)),
    ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype(np.uint8)),
})
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(name, _TORCH_DTYPES[dtype])
                         for name, dtype in _STORAGE_DTYPES.items()})
_ALLOWED_GLOBALS.update({("torch", name): _DtypeName(name, dtype)
                         for name, dtype in _TORCH_DTYPES.items()})


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class _StorageTable:
    """The root storages a pickle refers to: key -> (dtype, numel), in order of first use."""

    def __init__(self) -> None:
        self.roots: dict[str, tuple[np.dtype, int]] = {}
        self._views: dict[str, _StorageRef] = {}

    def add(self, storage_type: Any, key: Any, numel: Any, view: Any = None) -> _StorageRef:
        """Records a storage named by a persistent id and returns a reference to it."""
        if not isinstance(storage_type, _StorageType):
            raise _Malformed(f"storage type {_short_repr(storage_type)} is not a storage class")
        if not isinstance(key, str):
            raise _Malformed(f"storage key {_short_repr(key)} is not a string")
        if type(numel) is not int or numel < 0:
            raise _Malformed(f"storage {key!r} has size {_short_repr(numel)}")
        known = self.roots.setdefault(key, (storage_type.dtype, numel))
        if known != (storage_type.dtype, numel):
            raise _Malformed(f"storage {key!r} is named with two different types or sizes")
        if view is None:
            return _StorageRef(key, storage_type.dtype, 0, numel)
        # Legacy files from torch < 0.4 could save a slice of a storage as its own storage:
        # view_metadata is (view_key, offset, view_numel) inside the root storage `key`.
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], str)
                and all(type(v) is int and v >= 0 for v in view[1:])):
            raise _Malformed(f"storage view metadata {_short_repr(view)} is malformed")
        view_key, offset, view_numel = view
        ref = self._views.setdefault(view_key,
                                     _StorageRef(key, storage_type.dtype, offset, view_numel))
        if ref != _StorageRef(key, storage_type.dtype, offset, view_numel):
            raise _Malformed(f"storage view {view_key!r} is defined twice")
        return ref


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only containers, numbers, strings and torch tensor descriptions.

    `find_class` is the one place where pickle turns a name into a callable, for every opcode
    that names one (GLOBAL, STACK_GLOBAL, INST, OBJ, EXT*), so refusing there refuses before
    anything runs.
    """

    def __init__(self, file: IO[bytes], path: Any, storages: _StorageTable | None,
                 legacy: bool) -> None:
        # torch.load decodes Python 2 byte strings as UTF-8; so do we.
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._storages = storages
        self._legacy = legacy

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise _error(self._path, f"refused to load global {module}.{name}: a weight file "
                         "may only hold tensors, storages, dtypes and plain containers (this "
                         "one holds other Python objects, or is malicious)") from None

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise _Malformed(f"unexpected persistent id {_short_repr(pid)}")
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            # e.g. ('module', ...) records the source code of a whole saved nn.Module.
            raise _Malformed(f"unsupported persistent id {_short_repr(pid)} (only storages "
                             "are supported)")
        if self._legacy and len(pid) == 6:
            _, storage_type, key, _location, numel, view = pid
            return self._storages.add(storage_type, key, numel, view)
        if not self._legacy and len(pid) == 5:
            _, storage_type, key, _location, numel = pid
            return self._storages.add(storage_type, key, numel)
        raise _Malformed(f"malformed storage persistent id {_short_repr(pid)}")


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
# Protocol 5's out-of-band buffers: torch never writes them, and CPython's unpickler handles
# crafted ones untidily.
_REFUSED_OPCODES = frozenset({"BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER"})


def _prescan(file: IO[bytes], path: Any, what: str) -> None:
    """Walks one pickle's opcodes without running them, then rewinds `file`.

    CPython's unpickler grows its memo table to the largest index a PUT names and zeroes the
    new slots, so a 5-byte LONG_BINPUT with index 2**30 would make it touch gigabytes. Python's
    pickler numbers memo entries 0, 1, 2, ..., so an index can never exceed the number of
    opcodes before it; larger ones are refused here.
    """
    start = file.tell()
    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(file)):
            if opcode.name in _MEMO_PUTS and not (type(arg) is int and 0 <= arg <= count):
                raise _error(path, f"the {what} is malformed (memo index {_short_repr(arg)} "
                             f"at opcode {count})")
            if opcode.name in _REFUSED_OPCODES:
                raise _error(path, f"the {what} uses unsupported opcode {opcode.name}")
    except WeightFileError:
        raise
    except Exception as e:  # pickletools' ValueErrors: bad opcode, argument, or early end
        message = str(e)
        if "remain" in message or "exhausted" in message:
            raise _error(path, f"the file is truncated: it ends inside the {what}") from None
        raise _error(path, f"the {what} is malformed ({type(e).__name__}: {e})") from None
    file.seek(start)


def _unpickle(file: IO[bytes], path: Any, storages: _StorageTable | None = None,
              legacy: bool = True, what: str = "pickle") -> Any:
    """Reads one pickle from `file` with `_RestrictedUnpickler`, wrapping every failure."""
    _prescan(file, path, what)
    try:
        return _RestrictedUnpickler(file, path, storages, legacy).load()
    except (WeightFileError, _Malformed):
        raise
    except EOFError:
        raise _error(path, f"the file is truncated: it ends inside the {what}") from None
    except Exception as e:  # untrusted input can make the unpickler fail in many ways
        if "truncated" in str(e):
            raise _error(path, f"the file is truncated: it ends inside the {what}") from None
        raise _error(path, f"the {what} is malformed ({type(e).__name__}: {e})") from None


# --- Turning references into arrays -------------------------------------------------------


def _swap_to_native(array: np.ndarray, stored_order: str) -> None:
    """Byte-swaps `array` in place when it was stored in the other byte order."""
    if stored_order == sys.byteorder or array.dtype.itemsize == 1:
        return
    if array.dtype.kind == "c":  # a complex number is two floats, each swapped on its own
        array.view(np.dtype(f"f{array.dtype.itemsize // 2}")).byteswap(inplace=True)
    else:  # a plain integer view swaps any dtype, bfloat16 included, by its item size
        array.view(np.dtype(f"u{array.dtype.itemsize}")).byteswap(inplace=True)


def _check_index(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _Malformed(f"tensor {what} {_short_repr(value)} is not a non-negative integer")
    return value


def _tensor_array(ref: _TensorRef, buffers: dict[str, bytes], byteorder: str) -> np.ndarray:
    """Copies the elements `ref` describes out of its storage's bytes, after bounds checks.

    The checks matter beyond tidiness: `as_strided` reads whatever memory the offsets point
    at, so a crafted file could otherwise make us copy memory outside the buffer.
    """
    storage = ref.storage
    buffer = buffers.get(storage.key)
    if buffer is None:
        raise _Malformed(f"storage {storage.key!r} has no data in the file")
    start = storage.offset * storage.dtype.itemsize
    nbytes = storage.numel * storage.dtype.itemsize
    if start + nbytes > len(buffer):
        raise _Malformed(f"a view of storage {storage.key!r} reaches past its end")
    itemsize = ref.dtype.itemsize
    if nbytes % itemsize:
        raise _Malformed(f"storage {storage.key!r} of {nbytes} bytes does not hold whole "
                         f"{ref.dtype} elements")
    offset = _check_index(ref.offset, "offset")
    shape = tuple(_check_index(n, "size") for n in ref.shape)
    strides = tuple(_check_index(s, "stride") for s in ref.strides)
    if len(shape) != len(strides):
        raise _Malformed(f"tensor size {shape} and stride {strides} differ in length")
    if 0 in shape:
        return np.zeros(shape, ref.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(shape, strides))
    numel = nbytes // itemsize
    if last >= numel:
        raise _Malformed(f"a tensor of size {shape}, stride {strides} at offset {offset} "
                         f"reaches past the end of storage {storage.key!r} ({numel} elements)")
    # Only a tensor whose elements overlap (an expand(), stride 0) can hold more elements than
    # its storage, which the file bounds; cap those, as the copy could exhaust memory.
    size = math.prod(shape)
    if size > max(numel, _MAX_EXPANDED_ELEMENTS):
        raise _Malformed(f"a tensor of size {shape}, stride {strides} repeats the "
                         f"{numel} elements of storage {storage.key!r} into {size}; more than "
                         f"{_MAX_EXPANDED_ELEMENTS} are refused")
    flat = np.frombuffer(buffer, ref.dtype, count=numel, offset=start)
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape, tuple(s * itemsize for s in strides), writeable=False)
    array = np.array(view, order="C")  # a copy: owns its memory, contiguous
    _swap_to_native(array, byteorder)
    return array


def _materialise(obj: Any, buffers: dict[str, bytes], byteorder: str) -> Any:
    """Returns `obj` with tensor/storage references replaced by arrays and dtype names by
    NumPy dtypes; dict subclasses (OrderedDict) become plain dicts, which keep order too."""
    done: dict[int, Any] = {}  # id -> result, so shared tensors are copied once

    def walk(value: Any) -> Any:
        if id(value) in done:
            return done[id(value)]
        if isinstance(value, _TensorRef):
            result: Any = _tensor_array(value, buffers, byteorder)
        elif isinstance(value, _StorageRef):  # a bare storage: its elements, flat
            result = _tensor_array(
                _TensorRef(value, 0, (value.numel,), (1,), value.dtype), buffers, byteorder)
        elif isinstance(value, _DtypeName):
            result = value.dtype
        elif isinstance(value, _StorageType):
            result = f"torch.{value.name}"
        elif isinstance(value, _Allowed):  # a bare reference to, say, OrderedDict
            result = value.name
        elif isinstance(value, dict):
            result = done[id(value)] = {}
            for key, item in value.items():
                if isinstance(key, (_TensorRef, _StorageRef)):
                    raise _Malformed("a tensor is used as a dict key")
                result[key] = walk(item)
        elif isinstance(value, list):
            result = done[id(value)] = []
            result.extend(walk(item) for item in value)
        elif isinstance(value, tuple):
            result = tuple(walk(item) for item in value)
        elif isinstance(value, (set, frozenset)):
            if any(isinstance(item, (_TensorRef, _StorageRef)) for item in value):
                raise _Malformed("a set holds tensors")
            result = value
        else:  # numbers, strings, bytes, None
            result = value
        done[id(value)] = result
        return result

    return walk(obj)


# --- The three containers -----------------------------------------------------------------


def _read_zip(file: IO[bytes], path: Any, archive_size: int) -> Any:
    """Reads a torch >= 1.6 zip archive."""
    try:
        archive = zipfile.ZipFile(file)
    except Exception as e:  # BadZipFile, EOFError, NotImplementedError ("zip file version")...
        raise _error(path, f"the zip archive is truncated or corrupt ({e})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            found = "no" if not pickles else "several"
            raise _error(path, f"a zip archive but not a PyTorch checkpoint ({found} "
                         "<name>/data.pkl record)")
        prefix = pickles[0][: -len("data.pkl")]

        def read_record(name: str) -> bytes:
            try:
                info = archive.getinfo(name)
            except KeyError:
                raise _error(path, f"the zip archive has no record {name}") from None
            # Sizes come from the (untrusted) central directory: refuse ones no real record
            # can have before zipfile allocates or inflates that much. Deflate expands at most
            # ~1032:1; torch itself stores records uncompressed.
            if info.compress_size > archive_size or info.file_size > (
                    info.compress_size if info.compress_type == zipfile.ZIP_STORED
                    else 1032 * info.compress_size + 1024):
                raise _error(path, f"record {name} is corrupt (its sizes are impossible)")
            if name.endswith(".pkl") and info.file_size > _MAX_PICKLE_BYTES:
                raise _error(path, f"record {name} would inflate to {info.file_size:,} bytes; "
                             f"a state dict's pickle is a few kilobytes")
            try:
                return archive.read(info)
            except Exception as e:  # BadZipFile (bad CRC, bad header), EOFError, zlib.error
                raise _error(path, f"record {name} is truncated or corrupt ({e})") from None

        if prefix + "constants.pkl" in names:
            raise _error(path, "a TorchScript archive (torch.jit.save), not a torch.save "
                         "checkpoint; save the model's state_dict() instead")
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = read_record(prefix + "byteorder").decode("ascii", "replace").strip()
            if byteorder not in ("little", "big"):
                raise _error(path, f"unknown byte order {byteorder!r}")
        storages = _StorageTable()
        obj = _unpickle(io.BytesIO(read_record(pickles[0])), path, storages, legacy=False,
                        what="data.pkl pickle")
        total = sum(numel * dtype.itemsize for dtype, numel in storages.roots.values())
        if total > max_weight_bytes():
            raise _error(path, _over_limit("its tensors would hold", total))
        buffers: dict[str, bytes] = {}
        for key, (dtype, numel) in storages.roots.items():
            name = f"{prefix}data/{key}"
            try:
                size = archive.getinfo(name).file_size
            except KeyError:
                raise _error(path, f"the zip archive has no record {name} for storage "
                             f"{key!r}") from None
            if size != numel * dtype.itemsize:
                raise _error(path, f"record {name} holds {size} bytes, but storage {key!r} "
                             f"has {numel} {dtype} elements")
            buffers[key] = read_record(name)
    try:
        return _materialise(obj, buffers, byteorder)
    except _Malformed as e:
        raise _error(path, str(e)) from None


def _read_legacy(whole: IO[bytes], path: Any, file_size: int) -> Any:
    """Reads a torch <= 1.5 (`_use_new_zipfile_serialization=False`) file."""
    # From memory: a crafted length in a pickle opcode makes a real file's read(n) allocate n
    # bytes up front, while BytesIO returns only what is there.
    file = io.BytesIO(whole.read())
    magic = _unpickle(file, path, what="first pickle")
    if type(magic) is not int or magic != LEGACY_MAGIC:
        raise _error(path, "a pickle, but not a PyTorch file (no PyTorch magic number)")
    version = _unpickle(file, path, what="protocol version")
    if version != LEGACY_PROTOCOL_VERSION:
        raise _error(path, f"unsupported PyTorch legacy protocol version {_short_repr(version)}")
    # System information (endianness, C type sizes): torch.load ignores it, and storage data
    # is always little-endian, so do we.
    _unpickle(file, path, what="system-information pickle")
    storages = _StorageTable()
    obj = _unpickle(file, path, storages, legacy=True, what="main pickle")
    keys = _unpickle(file, path, what="storage-key pickle")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _error(path, "the storage-key pickle is not a list of strings")
    buffers: dict[str, bytes] = {}
    for key in keys:
        if key not in storages.roots or key in buffers:
            raise _error(path, f"storage {key!r} is listed but not used, or listed twice")
        dtype, numel = storages.roots[key]
        header = file.read(8)
        if len(header) < 8:
            raise _error(path, f"the file is truncated: it ends before storage {key!r}")
        (count,) = struct.unpack("<q", header)
        if count != numel:
            raise _error(path, f"storage {key!r} holds {count} elements in the file, but "
                         f"{numel} in the pickle")
        nbytes = count * dtype.itemsize
        # Compared with the file size before reading, so a corrupt count cannot make us
        # allocate more than the file holds.
        if nbytes > file_size - file.tell():
            raise _error(path, f"the file is truncated: storage {key!r} needs {nbytes} bytes, "
                         f"{file_size - file.tell()} remain")
        buffers[key] = file.read(nbytes)
    try:
        return _materialise(obj, buffers, "little")
    except _Malformed as e:
        raise _error(path, str(e)) from None


def _read_safetensors(file: IO[bytes], path: Any, file_size: int) -> dict[str, np.ndarray]:
    """Reads a .safetensors file."""
    (header_size,) = struct.unpack("<Q", file.read(8))
    if header_size > file_size - 8:
        raise _error(path, f"the file is truncated or not safetensors: the header claims "
                     f"{header_size} bytes, {file_size - 8} follow")
    if header_size > _MAX_SAFETENSORS_HEADER:
        raise _error(path, f"bad safetensors header: {header_size} bytes is too long")
    try:
        header = json.loads(file.read(header_size).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise _error(path, f"bad safetensors header: not UTF-8 JSON ({e})") from None
    if not isinstance(header, dict):
        raise _error(path, "bad safetensors header: not a JSON object")
    data_start = 8 + header_size
    data_size = file_size - data_start
    arrays: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        if name == "__metadata__":  # free-form string metadata, not a tensor
            continue
        if not (isinstance(entry, dict) and {"dtype", "shape", "data_offsets"} <= entry.keys()):
            raise _error(path, f"bad safetensors header: entry {name!r} lacks dtype, shape or "
                         "data_offsets")
        dtype = _SAFETENSORS_DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) \
            else None
        if dtype is None:
            raise _error(path, f"tensor {name!r} has unsupported dtype "
                         f"{_short_repr(entry['dtype'])} (supported: "
                         f"{', '.join(_SAFETENSORS_DTYPES)})")
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not (isinstance(shape, list)
                and all(type(n) is int and n >= 0 for n in shape)):
            raise _error(path, f"bad safetensors header: tensor {name!r} has shape "
                         f"{_short_repr(shape)}")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(type(o) is int for o in offsets) and 0 <= offsets[0] <= offsets[1]):
            raise _error(path, f"bad safetensors header: tensor {name!r} has data_offsets "
                         f"{_short_repr(offsets)}")
        begin, end = offsets
        nbytes = math.prod(shape) * dtype.itemsize
        if end - begin != nbytes:
            raise _error(path, f"bad safetensors header: tensor {name!r} of shape {shape} "
                         f"{entry['dtype']} needs {nbytes} bytes, data_offsets give "
                         f"{end - begin}")
        if end > data_size:
            raise _error(path, f"the file is truncated: tensor {name!r} ends at data byte "
                         f"{end}, the file holds {data_size}")
        file.seek(data_start + begin)
        data = file.read(nbytes)
        if len(data) != nbytes:
            raise _error(path, f"the file is truncated inside tensor {name!r}")
        array = np.frombuffer(data, dtype).reshape(shape).copy()  # own memory, writeable
        _swap_to_native(array, "little")
        arrays[name] = array
    return arrays


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Reads a PyTorch (zip or legacy) or safetensors file into plain Python objects.

    Unlike `read_state_dict`, nothing is unwrapped or dropped: a checkpoint holding
    `{"state_dict": ..., "epoch": 3}` comes back as such.

    Args:
      path: the file.

    Returns:
      The saved object with every tensor, parameter or storage replaced by a NumPy array
      (owning its memory), every torch dtype by a NumPy dtype, `torch.Size` by a tuple and
      OrderedDicts by dicts. For safetensors, a dict of arrays.

    Raises:
      WeightFileError: the file is missing, empty, truncated, malformed, of an unknown
        format, holds an unsupported dtype, or names a Python global outside the allow-list
        (never run).
    """
    try:
        with open(path, "rb") as file:
            file_size = os.fstat(file.fileno()).st_size
            if file_size == 0:
                raise _error(path, "the file is empty")
            if file_size > max_weight_bytes() + _MAX_PICKLE_BYTES:
                raise _error(path, _over_limit("the file holds", file_size))
            head = file.read(16)
            file.seek(0)
            if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
                return _read_zip(file, path, file_size)
            # A safetensors header length can start with byte 0x80 like a pickle; the JSON
            # brace at byte 8 and a length that fits the file tell it apart.
            looks_safetensors = len(head) >= 9 and head[8:9] == b"{"
            if looks_safetensors and struct.unpack("<Q", head[:8])[0] <= file_size - 8:
                return _read_safetensors(file, path, file_size)
            if head.startswith(b"\x80"):  # pickle protocol 2+ (what torch always wrote)
                return _read_legacy(file, path, file_size)
            if looks_safetensors:
                return _read_safetensors(file, path, file_size)
            raise _error(path, f"unknown format: not a PyTorch zip archive, a PyTorch legacy "
                         f"file or safetensors (the file starts with {head[:8]!r})")
    except WeightFileError:
        raise
    except _Malformed as e:
        raise _error(path, str(e)) from None
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except IsADirectoryError:
        raise _error(path, "a directory, not a weight file") from None
    except OSError as e:
        raise _error(path, f"cannot read the file ({e.strerror or e})") from None
    except (MemoryError, RecursionError) as e:  # absurd sizes or nesting in a crafted file
        raise _error(path, f"the file describes data too large or too deeply nested to "
                     f"read ({type(e).__name__})") from None


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "a single array"
    return f"a {type(value).__name__}"


def _find_weights(obj: dict, depth: int = 0) -> dict | None:
    """The dict of arrays under the first of WRAPPER_KEYS that leads to one, or None."""
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if not isinstance(inner, dict):
            continue
        if any(isinstance(v, np.ndarray) for v in inner.values()):
            return inner
        if depth < 3:  # e.g. {"model": {"state_dict": {...}}}
            found = _find_weights(inner, depth + 1)
            if found is not None:
                return found
    return None


def unwrap_state_dict(obj: Any, source: str | os.PathLike = "<checkpoint>"
                      ) -> dict[str, np.ndarray]:
    """Finds the weights in a checkpoint read by `read_checkpoint`.

    When the top-level dict holds, under one of `WRAPPER_KEYS`, a dict with arrays, that dict
    is used (searched in the order "params_ema", "params", "state_dict", "model": BasicSR
    saves both "params" and the EMA weights "params_ema", and the EMA ones are those its
    models are evaluated and published with). Values that are not arrays (an "epoch" count,
    optimizer state) are dropped. When every key starts with "module." (a model wrapped in
    DataParallel or DistributedDataParallel when saved), that prefix is removed.

    Args:
      obj: what `read_checkpoint` returned.
      source: named at the start of error messages (the file's path).

    Returns:
      {parameter name: array}, in the saved order.

    Raises:
      WeightFileError: `obj` is not a dict, or the chosen dict holds no arrays or has
        non-string keys.
    """
    if not isinstance(obj, dict):
        raise _error(source, f"the file holds {_describe(obj)}, not a dict of tensors")
    weights = _find_weights(obj)
    if weights is None:
        weights = obj
    state: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        if not isinstance(value, np.ndarray):
            continue
        if not isinstance(key, str):
            raise _error(source, f"tensor key {_short_repr(key)} is not a string")
        state[key] = value
    if not state:
        keys = ", ".join(_short_repr(k, 40) for k in list(weights)[:10])
        raise _error(source, f"no tensors found (top-level keys: {keys or 'none'})")
    prefix = "module."
    if all(key.startswith(prefix) for key in state):
        state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads the weights of a PyTorch (.pth/.pt, zip or legacy) or .safetensors file.

    Pickles are read with an allow-list (see the module docstring), so an untrusted file can
    not run code; the checkpoint is unwrapped as `unwrap_state_dict` describes.

    Args:
      path: the file.

    Returns:
      {parameter name: array}, arrays owning their memory, in the dtype they were saved in
      (bfloat16 as `ml_dtypes.bfloat16`).

    Raises:
      WeightFileError: see `read_checkpoint` and `unwrap_state_dict`.
    """
    return unwrap_state_dict(read_checkpoint(path), path)
