"""Unpickle a `.bin` (docs/method.md §3.2) without running code and without allocating more than it holds.

A pickle can call any importable function with arguments of its choosing. This loader resolves only
the few callables that rebuild numpy arrays, dtypes, scalars and Python-3-written bytes, and wraps each
one so that its arguments are checked first: an array may not hold Python objects and may not be larger
than the file it came from (a 49-byte pickle can otherwise ask numpy for gigabytes), and bytes may only
be rebuilt with the latin-1 codec. Length prefixes of the pickle's own opcodes are checked against the
data before the C unpickler sees them.
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


class _CheckedArray(np.ndarray):
    """The array type handed to `_reconstruct`, so that restoring its state is checked first.

    Calling it directly would allocate any shape (numpy builds arrays in `_reconstruct` without
    calling `__new__`, so refusing here costs the real rebuild nothing)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _CheckedArray:
        raise PickleRefused(
            "asks for numpy.ndarray called directly (only numpy's own rebuild may make arrays)"
        )

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise PickleRefused("asks for an array state that is not numpy's")
        shape, dtype, _, raw = state[-4:]
        _check_dtype(dtype)
        if not isinstance(raw, (bytes, bytearray, str)):
            raise PickleRefused("asks for an array whose data is not a byte string")
        if _nbytes(shape, dtype) != len(raw):
            raise PickleRefused(
                f"asks for an array of shape {reprlib.repr(shape)} whose data holds {len(raw)} bytes"
            )
        super().__setstate__(state)


def _check_dtype(dtype: Any) -> None:
    if not isinstance(dtype, np.dtype):
        raise PickleRefused(f"asks for an array type that is a {type(dtype).__name__}")
    if dtype.hasobject:
        raise PickleRefused("asks for an array of Python objects")


def _nbytes(shape: Any, dtype: np.dtype) -> int:
    if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
        raise PickleRefused(f"asks for an array shape {reprlib.repr(shape)}")
    return math.prod(shape) * dtype.itemsize


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, encoding: str) -> None:
        super().__init__(io.BytesIO(data), encoding=encoding)
        self.budget = len(data)
        array_class = _CheckedArray

        def reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
            if subtype is not array_class:
                raise PickleRefused("asks for an array of a type other than numpy.ndarray")
            if not isinstance(dtype, (bytes, str)) or _nbytes(shape, np.dtype(np.uint8)) > self.budget:
                raise PickleRefused(f"asks for an empty array of shape {reprlib.repr(shape)}")
            return _multiarray._reconstruct(array_class, shape, dtype)

        def frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
            _check_dtype(dtype)
            if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)):
                raise PickleRefused("asks for an array buffer that is not bytes")
            return _numeric._frombuffer(buffer, dtype, shape, order)

        def scalar(dtype: Any, data: Any = None) -> Any:
            _check_dtype(dtype)
            if not isinstance(data, (bytes, str)):
                raise PickleRefused("asks for a numpy scalar that is not built from bytes")
            return _multiarray.scalar(dtype, data)

        def make_dtype(*args: Any) -> np.dtype:
            if not args or not isinstance(args[0], str) or len(args[0]) > 16:
                raise PickleRefused(f"asks for a dtype built from {reprlib.repr(args[:1])}")
            return np.dtype(*args)

        def encode(text: Any, codec: Any = "utf-8", *_: Any) -> bytes:
            if not isinstance(text, str) or codec not in ("latin1", "latin-1"):
                raise PickleRefused(
                    f"asks for _codecs.encode with codec {reprlib.repr(codec)} (only latin1 rebuilds bytes)"
                )
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


def _check_lengths(data: bytes) -> None:
    """Walk the opcodes before the C unpickler sees them: pickletools reads each length-prefixed
    argument, so a prefix that claims more bytes than remain fails here instead of sizing a buffer;
    and a memo index must be small, because the C unpickler grows its memo table to the index
    (LONG_BINPUT 2**32-1 asks for a 32 GB table in a 9-byte pickle)."""
    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(io.BytesIO(data))):
            # picklers number memo entries 0, 1, 2, ... as they go: an index beyond the opcodes so far is forged
            if opcode.name in _MEMO_OPS and not 0 <= int(arg) <= count:
                raise pickle.UnpicklingError(f"memo index {arg} at opcode {count}")
    except (ValueError, EOFError, UnicodeDecodeError) as exc:
        raise pickle.UnpicklingError(str(exc)) from None


def restricted_load(data: bytes, encoding: str) -> Any:
    """Unpickle `data`; PickleRefused for anything beyond numpy rebuilds, other exceptions for damage."""
    _check_lengths(data)
    return _Unpickler(data, encoding).load()
