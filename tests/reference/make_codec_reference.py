#!/usr/bin/python3
"""make_codec_reference.py: float32 inputs and their float16 / bfloat16 round trips, written
by numpy, for tests/test_codec.c (src/net/codec.c checks its conversions against them).

Output: codec_reference.bin, little-endian:
    magic   b"SLCODEC1"
    u32     n
    n x u32 the float32 inputs' bits
    n x u16 numpy's float16 of each input:   np.float32 -> np.float16 (round to nearest even;
            overflow gives inf there: the C codec saturates finite inputs to 65504 instead,
            and the test expects exactly that where this file says inf for a finite input)
    n x u16 bfloat16 of each input, round to nearest even by bit manipulation on the
            float32 bits (numpy has no bfloat16): NaN -> quiet NaN keeping the top bits;
            finite overflow gives inf here too (the C codec saturates to 0x7f7f)

The inputs: hand-picked edge cases (zeros, subnormal boundaries, exact ties at each
format's rounding step, the overflow thresholds, inf, NaN) and seeded random values over
the whole float32 exponent range. Deterministic; runs in well under a second:
    /usr/bin/python3 tests/reference/make_codec_reference.py
"""
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def bits(values):
    return np.array(values, dtype=np.float32).view(np.uint32)


def edge_cases():
    f = []
    f += [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 3.14159265, -2.71828183, 1e-3, 1e3, 0.1, 1.0 / 3.0]
    # float16: largest finite, the midpoint to "65536" (ties to even -> inf), just below it
    f += [65504.0, -65504.0, 65519.996, 65520.0, -65520.0, 65536.0, 1e5, -1e9, 3.0e38]
    f += [65505.0, 65511.0, 65512.0, 65513.0]  # around the last step (32) of float16
    # float16 subnormals: smallest (2^-24), half of it (a tie -> 0), just above half
    f += [2.0**-24, 2.0**-25, -(2.0**-25), 2.0**-25 * 1.0000001, 1.5 * 2.0**-24, 2.5 * 2.0**-24,
          3.5 * 2.0**-24, 2.0**-14, 2.0**-14 - 2.0**-24, 2.0**-14 - 2.0**-25, 6.0e-8, 1e-10, 1e-30]
    # float16 ties at 1.0 (step 2^-10): 1 + 2^-11 (-> 1), 1 + 3 * 2^-11 (-> 1 + 2^-9)
    f += [1.0 + 2.0**-11, 1.0 + 3.0 * 2.0**-11, 1.0 + 2.0**-11 + 2.0**-20, -(1.0 + 3.0 * 2.0**-11)]
    # bfloat16 ties at 1.0 (step 2^-7)
    f += [1.0 + 2.0**-8, 1.0 + 3.0 * 2.0**-8, 1.0 + 2.0**-8 + 2.0**-20, 255.5, 256.5, 257.0]
    out = list(bits(f))
    # float32 bit patterns: subnormals, max, inf, NaNs (quiet, signalling, payloads, negative)
    out += [0x00000001, 0x80000001, 0x007fffff, 0x00800000, 0x7f7fffff, 0xff7fffff,
            0x7f7f7fff, 0x7f7f8000, 0x7f7f8001, 0x7f7f0000,  # around bfloat16's largest finite
            0x7f800000, 0xff800000, 0x7fc00000, 0xffc00000, 0x7f800001, 0x7fa00000,
            0x7fc02000, 0x7f801fff, 0xff812345, 0x3f808000, 0x3f818000, 0x3f808001]
    return np.array(out, dtype=np.uint32)


def random_cases(rng, n):
    # random sign, exponent over the whole range, random mantissa: every float32 but NaN/inf
    sign = rng.integers(0, 2, n, dtype=np.uint32) << 31
    exp = rng.integers(0, 255, n, dtype=np.uint32) << 23
    mant = rng.integers(0, 1 << 23, n, dtype=np.uint32)
    wide = sign | exp | mant
    # and values where float16 is interesting: exponents of 2^-26 .. 2^17
    exp2 = rng.integers(127 - 26, 127 + 17, n, dtype=np.uint32) << 23
    mant2 = rng.integers(0, 1 << 23, n, dtype=np.uint32)
    sign2 = rng.integers(0, 2, n, dtype=np.uint32) << 31
    near = sign2 | exp2 | mant2
    normal = rng.standard_normal(n).astype(np.float32)
    # exact float16 ties: the midpoint of two neighbouring finite float16 values (exact in
    # float32), which must go to the one with an even mantissa
    h = rng.integers(0, 0x7BFF, n, dtype=np.uint16) | (rng.integers(0, 2, n, dtype=np.uint16) << 15)
    lo = h.view(np.float16).astype(np.float32)
    hi = (h + 1).view(np.float16).astype(np.float32)
    ties = ((lo.astype(np.float64) + hi.astype(np.float64)) / 2).astype(np.float32)
    return np.concatenate([wide, near, normal.view(np.uint32), ties.view(np.uint32)])


def bf16_rne(u):
    u = u.astype(np.uint64)
    a = u & 0x7FFFFFFF
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    nan = (u >> 16 | 0x40) & 0xFFFF
    return np.where(a > 0x7F800000, nan, rounded).astype(np.uint16)


def main():
    rng = np.random.default_rng(20250118)
    x = np.concatenate([edge_cases(), random_cases(rng, 400)]).astype(np.uint32)
    with np.errstate(over="ignore", invalid="ignore"):
        f16 = x.view(np.float32).astype(np.float16).view(np.uint16)
    bf16 = bf16_rne(x)
    path = os.path.join(HERE, "codec_reference.bin")
    with open(path, "wb") as fh:
        fh.write(b"SLCODEC1")
        fh.write(struct.pack("<I", len(x)))
        fh.write(x.astype("<u4").tobytes())
        fh.write(f16.astype("<u2").tobytes())
        fh.write(bf16.astype("<u2").tobytes())
    # Self-checks: float16 -> float32 is exact, and the bfloat16 rule agrees with a slow
    # per-value nearest-even search on the finite inputs.
    back = f16.view(np.float16).astype(np.float32).view(np.uint32)
    for xi, hi, bi in zip(x[:200], f16[:200], back[:200]):
        h = np.uint16(hi).view(np.float16)
        if not np.isnan(h):
            assert np.float32(h).view(np.uint32) == bi
    for xi, bi in zip(x, bf16):
        if (xi & 0x7FFFFFFF) >= 0x7F800000:
            continue
        lo = (int(xi) >> 16) << 16
        hi = lo + 0x10000
        v = float(np.uint32(xi).view(np.float32))
        vlo = float(np.uint32(lo).view(np.float32))
        # one step above the largest finite is 2^128 (IEEE rounds as if the exponent were
        # unbounded, then overflows to inf)
        vhi = float(np.uint32(hi).view(np.float32)) if (hi & 0x7FFFFFFF) < 0x7F800000 else 2.0**128
        if xi & 0x80000000:
            vhi = -2.0**128 if (hi & 0x7FFFFFFF) >= 0x7F800000 else vhi
        dlo = abs(v - vlo)
        dhi = abs(vhi - v)
        want = lo >> 16 if (dlo < dhi or (dlo == dhi and ((lo >> 16) & 1) == 0)) else hi >> 16
        assert want & 0xFFFF == bi, (hex(xi), hex(want), hex(bi))
    print(f"{path}: {len(x)} values, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
