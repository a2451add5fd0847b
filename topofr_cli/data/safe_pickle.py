"""Unpickle a `.bin` (docs/method.md §3.2) without running code and without allocating more than it holds.

A pickle can call any importable function with arguments of its choosing. This loader resolves only
the few callables that rebuild numpy arrays, dtypes, scalars and Python-3-written bytes, and wraps each
one so that its arguments are checked first: an array may hold only plain numbers (decided from the
type its dtype was built from, never from the dtype's pickled flags), and bytes may only be rebuilt
with the latin-1 codec. Everything the load allocates, opcode by opcode and call by call, is charged
to one budget of a few times the file's size (a 49-byte pickle can otherwise ask numpy for gigabytes,
and a memoised string encoded 100,000 times adds up to 100 GB). Length prefixes of the pickle's own
opcodes are checked against the data before the C unpickler sees them.
"""

from __future__ import annotations

import _codecs
import io
import math
import pickle
import pickletools
import reprlib
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class PickleRefused(Exception):
    """The pickle asks for something a `.bin` never needs; the message says what."""


class MemoryBudget:
    """One running allowance of bytes for everything an input file may make the unpickler allocate.

    Checking each call against the file's size is not enough: a memoised string encoded 100,000
    times, or 100,000 small arrays, each pass such a check and add up to gigabytes. Every allocation
    is charged here, so the total stays a small multiple of the file however it is reached."""

    def __init__(self, file_size: int) -> None:
        self.file_size = file_size
        self.left = BUDGET_FACTOR * file_size + BUDGET_SLACK

    def charge(self, nbytes: int, what: str) -> None:
        self.left -= nbytes + _OBJECT_OVERHEAD
        if self.left < 0:
            raise PickleRefused(
                f"asks for more memory than a file of {self.file_size} bytes can hold "
                f"(over {BUDGET_FACTOR}x its size, reached at {what})"
            )


# A real `.bin` rebuilds about its own size; 4x plus 1 MiB leaves room for Python's object overhead.
BUDGET_FACTOR = 4
BUDGET_SLACK = 1 << 20
_OBJECT_OVERHEAD = 64  # the smallest Python object plus its stack or memo slot, charged per object made

# The scalar types a `.bin` holds (uint8 pixels, bool flags, numeric labels). Object-ness is decided by
# the type a dtype was built from, never by its pickled state: that state carries its own `hasobject`
# flag, field table and item size, and a crafted one can clear the flag of an object dtype (numpy
# then follows a pointer taken from the file) or crash numpy while it is being restored.
_PLAIN_TYPES = frozenset(
    {np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64}
    | {np.float16, np.float32, np.float64, np.complex64, np.complex128}
)


class _CheckedArray(np.ndarray):
    """The array type handed to `_reconstruct`, so that restoring its state is checked first.

    Calling it directly would allocate any shape (numpy builds arrays in `_reconstruct` without
    calling `__new__`, so refusing here costs the real rebuild nothing)."""

    budget: MemoryBudget  # set on the per-load subclass

    def __new__(cls, *args: Any, **kwargs: Any) -> _CheckedArray:
        raise PickleRefused(
            "asks for numpy.ndarray called directly (only numpy's own rebuild may make arrays)"
        )

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise PickleRefused("asks for an array state that is not numpy's")
        shape, dtype, fortran, raw = state[-4:]
        dtype = plain_dtype(dtype)
        if not isinstance(raw, (bytes, bytearray, str)):
            raise PickleRefused("asks for an array whose data is not a byte string")
        if _nbytes(shape, dtype) != len(raw):
            raise PickleRefused(
                f"asks for an array of shape {reprlib.repr(shape)} whose data holds {len(raw)} bytes"
            )
        self.budget.charge(len(raw), "an array")
        super().__setstate__((*state[:-4], shape, dtype, bool(fortran), raw))


class DtypeSpec:
    """What the pickle's `numpy.dtype(...)` call stands for, kept away from numpy.

    numpy's `dtype.__setstate__` trusts its argument (a crafted field table or sub-array with an
    item size of its choosing crashes the process inside numpy, before any check could run), so the
    pickle never gets a real dtype to rebuild: it gets this record, whose `__setstate__` keeps only
    the byte order, and `plain_dtype` makes the real dtype from the type name alone."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise PickleRefused(f"asks for a dtype state {reprlib.repr(state)}")
        byteorder, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            raise PickleRefused(f"asks for a {self.spec} dtype with fields or sub-arrays, not plain numbers")
        if byteorder not in ("<", ">", "|", "="):
            raise PickleRefused(f"asks for a dtype of byte order {reprlib.repr(byteorder)}")
        self.byteorder = byteorder


def plain_dtype(dtype: Any) -> np.dtype:
    """The plain numeric dtype a `DtypeSpec` stands for, or PickleRefused: built from the type's
    name and byte order alone, so nothing of the pickled state (flags, item size) reaches numpy."""
    if not isinstance(dtype, DtypeSpec):
        raise PickleRefused(f"asks for an array type that is a {type(dtype).__name__}")
    try:
        plain = np.dtype(dtype.spec)
    except (TypeError, ValueError):
        raise PickleRefused(f"asks for a dtype {reprlib.repr(dtype.spec)}") from None
    if plain.type is np.object_:
        raise PickleRefused("asks for an array of Python objects")
    if plain.type not in _PLAIN_TYPES:
        raise PickleRefused(f"asks for an array of {plain.type.__name__}, not of plain numbers")
    if dtype.byteorder in ("<", ">") and plain.itemsize > 1:
        plain = plain.newbyteorder(dtype.byteorder)
    return plain


def _nbytes(shape: Any, dtype: np.dtype) -> int:
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise PickleRefused(f"asks for an array shape {reprlib.repr(shape)}")
    return math.prod(shape) * dtype.itemsize


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, encoding: str, budget: MemoryBudget) -> None:
        super().__init__(io.BytesIO(data), encoding=encoding)
        self.budget = budget
        array_class = type("_CheckedArray", (_CheckedArray,), {"budget": budget})

        def reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
            if subtype is not array_class:
                raise PickleRefused("asks for an array of a type other than numpy.ndarray")
            if not isinstance(dtype, (bytes, str)) or _nbytes(shape, np.dtype(np.uint8)) > budget.left:
                raise PickleRefused(f"asks for an empty array of shape {reprlib.repr(shape)}")
            budget.charge(_nbytes(shape, np.dtype(np.uint8)), "an empty array")
            return _multiarray._reconstruct(array_class, shape, b"b")

        def frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
            dtype = plain_dtype(dtype)
            if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)):
                raise PickleRefused("asks for an array buffer that is not bytes")
            budget.charge(0, "an array view")
            return _numeric._frombuffer(buffer, dtype, shape, order)

        def scalar(dtype: Any, data: Any = None) -> Any:
            dtype = plain_dtype(dtype)
            if not isinstance(data, (bytes, str)):
                raise PickleRefused("asks for a numpy scalar that is not built from bytes")
            budget.charge(dtype.itemsize, "a numpy scalar")
            return _multiarray.scalar(dtype, data)

        def make_dtype(spec: Any, *_: Any) -> DtypeSpec:
            if not isinstance(spec, str) or len(spec) > 16:
                raise PickleRefused(f"asks for a dtype built from {reprlib.repr(spec)}")
            budget.charge(_OBJECT_OVERHEAD, "a dtype")
            return DtypeSpec(spec)

        def encode(text: Any, codec: Any = "utf-8", *_: Any) -> bytes:
            if not isinstance(text, str) or codec not in ("latin1", "latin-1"):
                raise PickleRefused(
                    f"asks for _codecs.encode with codec {reprlib.repr(codec)} (only latin1 rebuilds bytes)"
                )
            budget.charge(len(text), "_codecs.encode")
            return _codecs.encode(text, "latin1")

        self.callables = {
            ("numpy", "ndarray"): array_class,
            ("numpy", "dtype"): make_dtype,
            ("_codecs", "encode"): encode,
        }
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            self.callables[(module, "_reconstruct")] = reconstruct
            self.callables[(module, "scalar")] = scalar
        for module in ("numpy.core.numeric", "numpy._core.numeric"):
            self.callables[(module, "_frombuffer")] = frombuffer

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.callables[(module, name)]
        except KeyError:
            raise PickleRefused(
                f"references {module}.{name}, which a .bin never needs (it could run code)"
            ) from None


_MEMO_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def _check_opcodes(data: bytes, budget: MemoryBudget) -> None:
    """Walk the opcodes before the C unpickler sees them: pickletools reads each length-prefixed
    argument, so a prefix that claims more bytes than remain fails here instead of sizing a buffer;
    a memo index must be small, because the C unpickler grows its memo table to the index
    (LONG_BINPUT 2**32-1 asks for a 32 GB table in a 9-byte pickle); and every opcode is charged
    its own bytes plus one object, which bounds what plain opcodes build (a one-byte EMPTY_LIST
    makes a 56-byte list) before any callable runs."""
    try:
        previous = 0
        for count, (opcode, arg, position) in enumerate(pickletools.genops(io.BytesIO(data))):
            # picklers number memo entries 0, 1, 2, ... as they go: an index beyond the opcodes so far is forged
            if opcode.name in _MEMO_OPS and not 0 <= int(arg) <= count:
                raise pickle.UnpicklingError(f"memo index {arg} at opcode {count}")
            budget.charge(position - previous, f"opcode {count} ({opcode.name})")
            previous = position
    except (ValueError, EOFError, UnicodeDecodeError) as exc:
        raise pickle.UnpicklingError(str(exc)) from None


def restricted_load(data: bytes, encoding: str) -> Any:
    """Unpickle `data`; PickleRefused for anything beyond numpy rebuilds or for allocating more than
    `BUDGET_FACTOR` times the file (one budget for the whole load), other exceptions for damage."""
    budget = MemoryBudget(len(data))
    _check_opcodes(data, budget)
    return _Unpickler(data, encoding, budget).load()
