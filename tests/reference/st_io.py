"""Minimal safetensors reader/writer (numpy only), written from the format description in
shared/spec/formats.md: u64 little-endian header length N, N bytes of JSON, raw little-endian data.
Used to write the test fixtures in HuggingFace layout and to read them back in the reference."""
import json
import os
import struct

import numpy as np

DTYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2)}


def f32_to_bf16_bits(a):
    """float32 array -> uint16 bf16 bit patterns, round to nearest even (no NaNs expected)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_bits_to_f32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_to(a, dtype):
    """The float32 values a tensor has after being stored as dtype."""
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.copy()
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float32)
    if dtype == "BF16":
        return bf16_bits_to_f32(f32_to_bf16_bits(a))
    raise ValueError(dtype)


def encode(a, dtype):
    a = np.asarray(a, dtype=np.float32)
    if dtype == "F32":
        return a.astype("<f4").tobytes()
    if dtype == "F16":
        return a.astype("<f2").tobytes()
    if dtype == "BF16":
        return f32_to_bf16_bits(a).astype("<u2").tobytes()
    raise ValueError(dtype)


def write(path, tensors, metadata=None):
    """tensors: list of (name, float32 array, dtype) in file order."""
    header = {}
    blobs = []
    off = 0
    for name, a, dt in tensors:
        b = encode(a, dt)
        header[name] = {"dtype": dt, "shape": list(np.shape(a)), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata is not None:
        header["__metadata__"] = metadata
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((-len(hj)) % 8)  # pad so the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def read(path):
    """-> dict name -> float32 numpy array."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        np_t, sz = DTYPES[info["dtype"]]
        b, e = info["data_offsets"]
        a = np.frombuffer(data[base + b:base + e], dtype=np.dtype(np_t).newbyteorder("<"))
        if info["dtype"] == "BF16":
            a = bf16_bits_to_f32(a)
        out[name] = a.astype(np.float32).reshape(info["shape"])
    return out


def read_dir(d):
    """A HuggingFace checkpoint directory: model.safetensors.index.json (weight_map) or model.safetensors."""
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        out = {}
        for shard in sorted(set(wm.values())):
            part = read(os.path.join(d, shard))
            for k, v in part.items():
                assert wm.get(k) == shard, (k, shard)
                out[k] = v
        assert set(out) == set(wm)
        return out
    return read(os.path.join(d, "model.safetensors"))


def write_dir(d, tensors, n_shards=1):
    """Write tensors (list of (name, array, dtype)) as model.safetensors, or n_shards shards + index."""
    os.makedirs(d, exist_ok=True)
    if n_shards <= 1:
        write(os.path.join(d, "model.safetensors"), tensors, {"format": "pt"})
        return
    per = -(-len(tensors) // n_shards)
    wm = {}
    total = 0
    for s in range(n_shards):
        part = tensors[s * per:(s + 1) * per]
        fn = "model-%05d-of-%05d.safetensors" % (s + 1, n_shards)
        write(os.path.join(d, fn), part, {"format": "pt"})
        for name, a, dt in part:
            wm[name] = fn
            total += len(encode(a, dt))
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2, sort_keys=True)
        f.write("\n")
