"""Verification .bin files: round trip, numpy images, Python-2 pickles, and refusal of code-running pickles."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest
from writers.rec_writer import smooth_jpeg

from topofr_cli.data.bins import build_bin, read_bin, write_bin
from topofr_cli.data.images import decode_image
from topofr_cli.errors import TopofrError


def test_round_trip(tmp_path):
    images = [smooth_jpeg(seed) for seed in range(6)]
    write_bin(tmp_path / "x.bin", images, [True, False, True])
    pairs = read_bin(tmp_path / "x.bin")
    assert pairs.images == images and pairs.issame.dtype == np.bool_
    assert pairs.issame.tolist() == [True, False, True] and len(pairs) == 3
    # The file is the plain insightface structure: an unrestricted load sees (list of bytes, list of bool).
    loaded = pickle.loads((tmp_path / "x.bin").read_bytes())
    assert loaded == (images, [True, False, True])


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_images_and_flags(tmp_path, protocol):
    encoded = smooth_jpeg(1)
    pixels = decode_image(smooth_jpeg(2))
    payload = (
        [np.frombuffer(encoded, dtype=np.uint8), pixels, encoded, encoded],
        [np.bool_(True), np.bool_(False)],
    )
    (tmp_path / "np.bin").write_bytes(pickle.dumps(payload, protocol=protocol))
    pairs = read_bin(tmp_path / "np.bin")
    assert pairs.images[0] == encoded  # encoded bytes held in an array come back as bytes
    np.testing.assert_array_equal(pairs.images[1], pixels)  # decoded pixels stay pixels
    np.testing.assert_array_equal(decode_image(pairs.images[1]), pixels)
    assert pairs.issame.tolist() == [True, False]
    (tmp_path / "arr.bin").write_bytes(pickle.dumps(([encoded] * 2, np.array([False])), protocol=protocol))
    assert read_bin(tmp_path / "arr.bin").issame.tolist() == [False]


def _python2_pickle(images: list[bytes], flags: list[bool]) -> bytes:
    """Protocol 2 as Python 2 wrote it: images as BINSTRING (str), which Python 3 can read only as bytes."""
    out = b"\x80\x02(]q\x00("
    for image in images:
        out += b"T" + struct.pack("<I", len(image)) + image
    out += b"e]q\x01(" + b"".join(b"\x88" if f else b"\x89" for f in flags) + b"et."
    return out


def test_python2_pickle_needs_bytes_encoding(tmp_path):
    images = [smooth_jpeg(seed) for seed in range(4)]
    data = _python2_pickle(images, [False, True])
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(data)  # the plain default fails: the reader must retry with encoding='bytes'
    (tmp_path / "old.bin").write_bytes(data)
    pairs = read_bin(tmp_path / "old.bin")
    assert pairs.images == images and pairs.issame.tolist() == [False, True]


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsNumpyLoad:
    def __reduce__(self):
        return (np.load, ("/nonexistent.npy",))


def test_malicious_pickle_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.bin").write_bytes(pickle.dumps(([_RunsShell(marker), smooth_jpeg(0)], [True])))
    # Control: an unrestricted load really would run the payload (in a throw-away process).
    control = tmp_path / "control"
    (tmp_path / "control.bin").write_bytes(pickle.dumps(([_RunsShell(control), b""], [True])))
    subprocess.run(
        [sys.executable, "-c", f"import pickle; pickle.load(open({str(tmp_path / 'control.bin')!r}, 'rb'))"],
        check=True,
    )
    assert control.exists()
    with pytest.raises(
        TopofrError, match=r"evil\.bin: refused to load: the pickle references (posix|os)\.system"
    ):
        read_bin(tmp_path / "evil.bin")
    assert not marker.exists()


def test_only_the_numpy_rebuild_functions_are_allowed(tmp_path):
    (tmp_path / "np.bin").write_bytes(pickle.dumps(([_CallsNumpyLoad(), b""], [True])))
    with pytest.raises(TopofrError, match=r"references numpy\.load"):
        read_bin(tmp_path / "np.bin")
    (tmp_path / "eval.bin").write_bytes(b"\x80\x02cbuiltins\neval\nX\x03\x00\x00\x001+1\x85R.")
    with pytest.raises(TopofrError, match=r"references builtins\.eval"):
        read_bin(tmp_path / "eval.bin")


def test_bad_structures(tmp_path):
    cases = {
        "count.bin": pickle.dumps(([b"a", b"b", b"c"], [True])),
        "type.bin": pickle.dumps(([1, 2], [True])),
        "flag.bin": pickle.dumps(([b"a", b"b"], ["yes"])),
        "shape.bin": pickle.dumps({"images": []}),
        "junk.bin": b"not a pickle at all",
    }
    messages = {
        "count.bin": "3 images for 1 pairs",
        "type.bin": "image 0 is a int",
        "flag.bin": "issame entry 0",
        "shape.bin": "expected a pickled",
        "junk.bin": "not a readable",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(TopofrError, match=messages[name]):
            read_bin(tmp_path / name)


def test_build_bin_from_csv(tmp_path):
    (tmp_path / "imgs").mkdir()
    files = {}
    for name, seed in (("a.jpg", 1), ("b.jpg", 2), ("c.jpg", 3)):
        files[name] = smooth_jpeg(seed, size=40)
        (tmp_path / "imgs" / name).write_bytes(files[name])
    csv = tmp_path / "pairs.csv"
    csv.write_text("path1,path2,issame\nimgs/a.jpg,imgs/b.jpg,1\nimgs/a.jpg,imgs/c.jpg,false\n")
    report = build_bin(csv, tmp_path / "out.bin", progress=False)
    pairs = read_bin(tmp_path / "out.bin")
    assert report.num_pairs == 2 and pairs.issame.tolist() == [True, False]
    assert pairs.images == [files["a.jpg"], files["b.jpg"], files["a.jpg"], files["c.jpg"]]  # as-is
    build_bin(csv, tmp_path / "small.bin", size=24, progress=False)
    small = read_bin(tmp_path / "small.bin")
    assert all(decode_image(image).shape == (24, 24, 3) for image in small.images)
    assert small.images[0] != files["a.jpg"]
