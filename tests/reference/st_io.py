"""st_io.py: a tiny, dependency-free (numpy only) writer and reader of Hugging Face
safetensors files, for the reference scripts in this folder. Not a general library: it
writes what the scripts need and reads back what it wrote, to self-check.

Format: 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}
padded with spaces to a multiple of 8, then the data area."""
import json
import struct

import numpy as np

# numpy dtype -> safetensors dtype name. BF16 has no numpy dtype: pass ("BF16", uint16 array).
_NP_TO_ST = {
    np.dtype("float32"): "F32", np.dtype("float16"): "F16", np.dtype("float64"): "F64",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("int16"): "I16",
    np.dtype("int8"): "I8", np.dtype("uint8"): "U8", np.dtype("bool"): "BOOL",
}
_ST_TO_NP = {v: k for k, v in _NP_TO_ST.items()}
_ST_TO_NP["BF16"] = np.dtype("<u2")


def write(path, tensors, metadata=None, data_order=None, metadata_last=False):
    """tensors: list of (name, array) or (name, "BF16", uint16 array), written in the
    header in that order. data_order: optional list of names giving the order of the
    data area (to produce out-of-order offsets); default the header order."""
    entries = []
    for item in tensors:
        if len(item) == 3:
            name, dt, arr = item
        else:
            name, arr = item
            dt = _NP_TO_ST[np.asarray(arr).dtype]
        arr = np.array(arr, order="C")  # (ascontiguousarray would turn a 0-d array into 1-d)
        entries.append((name, dt, arr, arr.astype(arr.dtype.newbyteorder("<")).tobytes()))
    order = data_order or [e[0] for e in entries]
    offsets, pos = {}, 0
    for name in order:
        blob = next(e[3] for e in entries if e[0] == name)
        offsets[name] = (pos, pos + len(blob))
        pos += len(blob)
    header = {}
    if metadata and not metadata_last:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, dt, arr, _ in entries:
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": list(offsets[name])}
    if metadata and metadata_last:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name in order:
            f.write(next(e[3] for e in entries if e[0] == name))


def read(path):
    """Returns ({name: numpy array}, metadata dict). BF16 comes back as uint16."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=_ST_TO_NP[info["dtype"]].newbyteorder("<")).reshape(info["shape"])
    return out, meta
