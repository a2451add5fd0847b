"""`.bin` readers given crafted dtype states and allocation-multiplying pickles (issue 19, classes 2 and 3).

Each file is read in a child process under an address-space limit: a native crash (a dereferenced
file-controlled pointer) shows as a failed test, not a dead pytest, and the child reports its peak
resident memory so "no more than a small multiple of the file" is measured, not assumed.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

_DRIVER = r"""
import resource, sys
limit = int(sys.argv[2]) << 20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from topofr_cli.data.bins import read_bin
from topofr_cli.errors import TopofrError
import numpy as np


def high_water_mb():
    # VmHWM belongs to this program's address space; ru_maxrss would carry the parent's across exec
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) // 1024


before = high_water_mb()
try:
    pairs = read_bin(sys.argv[1])
    outcome = f"accepted {len(pairs)}"
except TopofrError as exc:
    outcome = f"error: {exc}"
peak = high_water_mb() - before
print(outcome)
print(f"peak {peak} uint8-itemsize {np.dtype('u1').itemsize}")
sys.exit(2 if outcome.startswith("error") else 0)
"""

ADDRESS_SPACE_MB = 1024


def read_in_child(path: Path) -> tuple[int, list[str], int]:
    """(exit code, output lines, peak RSS growth in MB during the read) of `read_bin(path)` in a child under RLIMIT_AS."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _DRIVER, str(path), str(ADDRESS_SPACE_MB)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    lines = done.stdout.splitlines()
    assert done.returncode in (0, 2), (done.returncode, done.stdout, done.stderr[-2000:])
    assert done.stderr == "", done.stderr[-2000:]
    peak = int(lines[-1].split()[1])
    assert lines[-1].endswith("uint8-itemsize 1"), lines  # the process's own uint8 was not rewritten
    return done.returncode, lines[:-1], peak


class _Reduce:
    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


_reconstruct = (np._core if hasattr(np, "_core") else np.core).multiarray._reconstruct
_scalar = (np._core if hasattr(np, "_core") else np.core).multiarray.scalar


def _array_from_state(dtype, raw, shape=(1,)):
    """An ndarray pickled as numpy does it, with the dtype object of our choosing."""
    return _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, raw))


def _dtype(spec, state, copy=True):
    return _Reduce(np.dtype, (spec, False, copy), state)


_CLEARED = 0  # the state's flags word with NPY_ITEM_HASOBJECT (and every other flag) cleared
_POINTER = struct.pack("<Q", 0x4141414141)

CRAFTED = {
    # an object dtype whose state says it holds no objects: tolist() used to follow the pointer
    "object-flag-cleared": _array_from_state(
        _dtype("O8", (3, "|", None, None, None, -1, -1, _CLEARED)), _POINTER
    ),
    "object-pointer-zero": _array_from_state(
        _dtype("O8", (3, "|", None, None, None, -1, -1, _CLEARED)), bytes(8)
    ),
    # a record whose only field is an object, flags cleared
    "record-with-object-field": _array_from_state(
        _dtype("V8", (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, _CLEARED)), _POINTER
    ),
    # a uint8 whose state claims 4096-byte items: reads beyond the 8 bytes given
    "uint8-itemsize-enlarged": _array_from_state(
        _dtype("u1", (3, "|", None, None, None, 4096, 1, _CLEARED)), bytes(8), shape=(8,)
    ),
    # the same on numpy's shared uint8 descriptor (copy=False): would rewrite uint8 process-wide
    "shared-uint8-rewritten": _array_from_state(
        _dtype("u1", (3, "|", None, None, None, 4096, 1, _CLEARED), copy=False), bytes(8), shape=(8,)
    ),
    # states numpy restores without checking (found by benchmarks/fuzz.py: SIGSEGV inside numpy)
    "record-field-beyond-itemsize": _array_from_state(
        _dtype("V8", (3, "|", None, ("a",), {"a": (np.dtype("f8"), 1 << 40)}, 8, 1, _CLEARED)), bytes(8)
    ),
    "subarray-larger-than-itemsize": _array_from_state(
        _dtype("V8", (3, "|", (np.dtype("u1"), (1 << 30,)), None, None, 8, 1, _CLEARED)), bytes(8)
    ),
    "object-scalar": _Reduce(_scalar, (_dtype("O8", (3, "|", None, None, None, -1, -1, _CLEARED)), _POINTER)),
    "subarray-of-objects": _array_from_state(
        _dtype("V8", (3, "|", (np.dtype("O"), (1,)), None, None, 8, 1, _CLEARED)), _POINTER
    ),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_crafted_dtype_states_are_refused_without_touching_memory(tmp_path, name):
    images = [np.zeros((2, 2, 3), np.uint8)] * 2
    path = tmp_path / f"{name}.bin"
    path.write_bytes(pickle.dumps((images, CRAFTED[name]), protocol=2))
    code, lines, _ = read_in_child(path)
    assert code == 2, lines
    if name.endswith("uint8-itemsize-enlarged") or name.startswith("shared-uint8"):
        # numpy keeps a builtin type's own item size whatever the state says: 8 bytes stay 8 flags
        expected = f"error: {path}: 2 images for 8 pairs (expected 16)"
    else:
        expected = f"error: {path}: refused to load: the pickle asks for"
    assert len(lines) == 1 and lines[0].startswith(expected), lines


def test_a_real_bin_with_numpy_arrays_still_reads(tmp_path):
    images = [np.full((4, 4, 3), i, np.uint8) for i in range(4)]
    path = tmp_path / "real.bin"
    path.write_bytes(pickle.dumps((images, np.array([True, False])), protocol=2))
    code, lines, _ = read_in_child(path)
    assert (code, lines) == (0, ["accepted 2"])
    path.write_bytes(pickle.dumps((images, np.array([True, False])), protocol=4))
    assert read_in_child(path)[:2] == (0, ["accepted 2"])


def _memo_pickle(body_item: bytes, setup: bytes, count: int) -> bytes:
    """protocol 2: `setup` memoises what `body_item` reuses; the item is repeated `count` times
    inside one list, then an ([], []) pair closes it (never reached when the budget holds)."""
    return b"\x80\x02" + setup + b"](" + body_item * count + b"e]]\x86\x86."


def _string(text_length: int) -> bytes:
    return b"X" + struct.pack("<I", text_length) + b"a" * text_length


ENCODE = b"c_codecs\nencode\nq\x00"
LATIN1 = b"X\x06\x00\x00\x00latin1q\x02"
RECONSTRUCT = b"cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01"

MULTIPLIERS = {
    # a 1 MB string memoised once and encoded 100,000 times: 100 GB asked by a 1.8 MB file
    "memoised-encode": _memo_pickle(
        b"h\x00(h\x01h\x02tR", ENCODE + _string(1 << 20) + b"q\x01" + LATIN1, 100_000
    ),
    # 100,000 empty arrays of 1 MB each, every one below the file's size
    "repeated-reconstruct": _memo_pickle(
        b"h\x00(h\x01(J\x00\x00\x10\x00tC\x01btR",
        RECONSTRUCT,
        100_000,
    ),
    # few opcodes, large results: a 1 MB string encoded 20 times passes the opcode walk and is
    # stopped by the charges of the calls themselves
    "memoised-encode-few-calls": _memo_pickle(
        b"h\x00(h\x01h\x02tR", ENCODE + _string(1 << 20) + b"q\x01" + LATIN1, 20
    ),
    # 2 MB of one-byte EMPTY_LIST opcodes: 56-byte lists, 64x the file
    "empty-lists": b"\x80\x02(" + b"]" * 2_000_000 + b"l.",
}


@pytest.mark.parametrize("name", sorted(MULTIPLIERS))
def test_allocation_multipliers_stop_at_a_budget_of_the_files_size(tmp_path, name):
    path = tmp_path / f"{name}.bin"
    path.write_bytes(MULTIPLIERS[name])
    size_mb = path.stat().st_size / 2**20
    code, lines, peak = read_in_child(path)
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {path}: refused to load: the pickle asks for more memory than a file")
    if name == "memoised-encode-few-calls":
        assert lines[0].endswith("reached at _codecs.encode)"), lines
    # the budget is 4x the file plus 1 MiB; the file itself and transient buffers come on top
    assert peak < 10 + 6 * size_mb, (peak, size_mb)


def test_repeated_array_state_copies_are_charged(tmp_path):
    """One 1 MB byte string memoised and used as the data of 2,000 arrays (each a private copy)."""
    raw = b"\x00" * (1 << 20)
    state = (1, (len(raw),), np.dtype("u1"), False, raw)
    arrays = [_Reduce(_reconstruct, (np.ndarray, (0,), b"b"), state) for _ in range(2000)]
    path = tmp_path / "copies.bin"
    path.write_bytes(pickle.dumps((arrays, [True] * 1000), protocol=4))
    assert path.stat().st_size < 2 << 20  # pickle memoised the one state tuple
    code, lines, peak = read_in_child(path)
    assert code == 2 and "more memory than a file" in lines[0], lines
    assert peak < 25, peak


def test_segfault_payload_through_the_cli_is_one_line(tmp_path):
    """The crafted object dtype, given to `topofr eval --bin` as a user would (a child process)."""
    import torch

    from topofr_cli.models import create_backbone

    torch.save(create_backbone("mbf", 8).state_dict(), tmp_path / "backbone.pt")
    path = tmp_path / "evil.bin"
    path.write_bytes(
        pickle.dumps(([np.zeros((2, 2, 3), np.uint8)] * 2, CRAFTED["object-flag-cleared"]), protocol=2)
    )
    done = subprocess.run(
        [sys.executable, "-m", "topofr_cli", "eval", str(tmp_path / "backbone.pt"), "--bin", str(path)]
        + ["--out", str(tmp_path / "report"), "--device", "cpu", "--num-workers", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")]
    assert (
        len(errors) == 1
        and "evil.bin: refused to load: the pickle asks for an array of Python objects" in errors[0]
    )
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "report").exists()
