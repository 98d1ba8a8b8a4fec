"""make_st_fixture.py: writes st_fixture.safetensors, the Python-written file that
tests/test_safetensors.c reads with exact expected values. Its header is json.dumps
formatted (spaces after separators, non-ASCII escaped), __metadata__ comes last and the
data area is in a different order from the header, so the C reader sees a layout its own
writer never produces. Regenerate: /usr/bin/python3 tests/reference/make_st_fixture.py"""
import os

import numpy as np

import st_io

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    tensors = [
        ("weight", np.array([[0.5, -1.25, 3.0], [1e-3, -7.5, 100.0]], dtype=np.float32)),
        ("ids", np.array([-1, 0, 7, 2147483647], dtype=np.int32)),
        ("big", np.array([-(2 ** 40), 2 ** 62], dtype=np.int64)),
        ("bytes", np.array([0, 128, 255], dtype=np.uint8)),
        ("half", np.array([1.0, -0.5, 65504.0, 2.0 ** -24], dtype=np.float16)),
        # bfloat16 1.0 = 0x3f80, 3.140625 = 0x4049, -2.0 = 0xc000
        ("bf", "BF16", np.array([0x3F80, 0x4049, 0xC000], dtype="<u2")),
        ("scalar", np.array(42.0, dtype=np.float32)),
        ("empty", np.zeros((0, 4), dtype=np.float32)),
    ]
    meta = {"format": "pt", "note": "caf\u00e9 \"quoted\" \\ back"}
    order = ["bytes", "empty", "bf", "weight", "half", "scalar", "ids", "big"]
    path = os.path.join(HERE, "st_fixture.safetensors")
    st_io.write(path, tensors, meta, data_order=order, metadata_last=True)
    back, m = st_io.read(path)
    assert m == meta
    for item in tensors:
        assert np.array_equal(back[item[0]], item[-1]), item[0]
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
