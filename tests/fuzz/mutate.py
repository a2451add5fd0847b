"""Seeded mutations of bytes and text: what a damaged disk, a bad converter or a hostile user produces."""

from __future__ import annotations

import re
import struct

import numpy as np

# Values at the edges of the integer and float types a reader converts to.
INTERESTING_INTS = [
    0,
    1,
    -1,
    2**7,
    2**8 - 1,
    2**15,
    2**16 - 1,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    10**30,
]
INTERESTING_FLOATS = [0.0, -0.0, float("nan"), float("inf"), float("-inf"), 3e38, -3e38, 1e-45, 2.0**31, 1e30]
INTERESTING_TEXT = [
    "9" * 5000,  # over Python's 4,300-digit int conversion limit
    "a\x00b",
    "0",
    "-1",
    "1e309",
    "nan",
    ".nan",
    "-.inf",
    "1e-3",
    str(2**64),
    "9" * 40,
    "[x]",
    "\x1b[2J",
    "\xff",
    "true",
    "null",
    "~",
    "''",
    "{}",
    "[]",
    "&a x",
    "*a",
    "!!python/object:os.system",
    "0x7fffffff",
    "1_000",
    "..",
    "/",
    "../../x",
    "\t",
    "\n",
    "é",
]


def mutate_bytes(data: bytes, rng: np.random.Generator, rounds: int | None = None) -> bytes:
    """1-4 rounds of: bit flips, interesting integers/floats written in place, truncation,
    chunk deletion/duplication/insertion of random bytes."""
    out = bytearray(data)
    for _ in range(rounds or int(rng.integers(1, 5))):
        op = int(rng.integers(0, 8))
        size = len(out)
        at = int(rng.integers(0, size)) if size else 0
        if op == 0 and size:  # flip 1-8 bits
            for _ in range(int(rng.integers(1, 9))):
                position = int(rng.integers(0, size))
                out[position] ^= 1 << int(rng.integers(0, 8))
        elif op == 1 and size >= 4:  # an interesting 4- or 8-byte integer, often aligned (headers are)
            value = INTERESTING_INTS[int(rng.integers(len(INTERESTING_INTS)))]
            width = 8 if rng.random() < 0.3 else 4
            at = min(at - at % 4 if rng.random() < 0.7 else at, size - width) if size >= width else 0
            packed = (value % 2 ** (8 * width)).to_bytes(width, "little")
            out[at : at + width] = packed
        elif op == 2 and size >= 4:  # an interesting float32
            value = INTERESTING_FLOATS[int(rng.integers(len(INTERESTING_FLOATS)))]
            at = min(at - at % 4, size - 4)
            out[at : at + 4] = struct.pack("<f", value)
        elif op == 3:  # truncate
            del out[at:]
        elif op == 4 and size:  # delete a chunk
            del out[at : at + int(rng.integers(1, 64))]
        elif op == 5 and size:  # duplicate a chunk
            chunk = bytes(out[at : at + int(rng.integers(1, 256))])
            out[at:at] = chunk
        elif op == 6:  # insert random bytes
            out[at:at] = rng.integers(0, 256, size=int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
        elif size:  # overwrite a run with one byte value (0x00 / 0xff / random)
            value = [0, 255, int(rng.integers(0, 256))][int(rng.integers(0, 3))]
            length = int(rng.integers(1, 32))
            out[at : at + length] = bytes([value]) * len(out[at : at + length])
    return bytes(out)


_TOKEN = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[A-Za-z_]+|\S")


def mutate_text(text: str, rng: np.random.Generator) -> bytes:
    """Token-level changes to a text format (numbers swapped for edge values, keys duplicated,
    nesting deepened, bytes that are not UTF-8), sometimes followed by byte-level damage."""
    op = int(rng.integers(0, 7))
    tokens = [m for m in _TOKEN.finditer(text)]
    if op == 0 and tokens:  # replace a token with an interesting one
        token = tokens[int(rng.integers(len(tokens)))]
        value = INTERESTING_TEXT[int(rng.integers(len(INTERESTING_TEXT)))]
        text = text[: token.start()] + value + text[token.end() :]
    elif op == 1:  # duplicate a line (duplicate keys)
        lines = text.splitlines(keepends=True)
        if lines:
            line = int(rng.integers(len(lines)))
            lines.insert(line, lines[line])
            text = "".join(lines)
    elif op == 2:  # deep nesting
        depth = int(rng.choice([10, 100, 1000, 5000]))
        at = int(rng.integers(0, len(text) + 1))
        text = text[:at] + "[" * depth + "]" * depth + text[at:]
    elif op == 3:  # non-UTF-8 bytes
        data = text.encode()
        at = int(rng.integers(0, len(data) + 1))
        return data[:at] + b"\xff\xfe\xc3" + data[at:]
    elif op == 4 and tokens:  # a number replaced by a very long one
        numbers = [t for t in tokens if t.group()[0].isdigit() or t.group()[0] == "-"]
        if numbers:
            token = numbers[int(rng.integers(len(numbers)))]
            text = text[: token.start()] + "9" * int(rng.integers(20, 400)) + text[token.end() :]
    elif op == 5:  # an alias bomb appended
        text += (
            "\nbomb: [&b0 [x, x, x, x, x, x, x, x], &b1 [*b0, *b0, *b0, *b0, *b0, *b0, *b0, *b0], "
            "&b2 [*b1, *b1, *b1, *b1, *b1, *b1, *b1, *b1], &b3 [*b2, *b2, *b2, *b2, *b2, *b2, *b2, *b2]]\n"
        )
    else:
        return mutate_bytes(text.encode(), rng)
    return text.encode("utf-8", "surrogateescape")
