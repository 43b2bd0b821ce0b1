#!/usr/bin/python3
"""Copy the tokenizer.ggml.* keys of one GGUF file (e.g. the `moec init --vocab-from` model) into another (e.g. the
`moec export`-ed trained model, whose checkpoint did not carry them). The tensor infos and the tensor data are kept
byte for byte (offsets are relative to the data section, which is re-aligned); keys already present are replaced.

usage: scripts/gguf-add-tokenizer.py MODEL.gguf TOKENIZER_DONOR.gguf OUT.gguf
"""
import struct
import sys

SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUF value type -> bytes


def skip_value(b, o, t):
    if t in SCALAR:
        return o + SCALAR[t]
    if t == 8:  # string: u64 length + bytes
        return o + 8 + struct.unpack_from("<Q", b, o)[0]
    if t == 9:  # array: u32 type, u64 count, values
        at, n = struct.unpack_from("<IQ", b, o)
        o += 12
        if at in SCALAR:
            return o + n * SCALAR[at]
        for _ in range(n):
            o = skip_value(b, o, at)
        return o
    raise ValueError(f"bad GGUF value type {t}")


def parse(path):
    """-> (version, [(key, raw kv bytes)], raw tensor-info bytes, n_tensors, alignment, data bytes)"""
    b = open(path, "rb").read()
    if b[:4] != b"GGUF":
        raise ValueError(f"{path}: not a GGUF file")
    ver, nt, nkv = struct.unpack_from("<IQQ", b, 4)
    o, kvs, align = 24, [], 32
    for _ in range(nkv):
        start = o
        n = struct.unpack_from("<Q", b, o)[0]
        key = b[o + 8:o + 8 + n].decode()
        o += 8 + n
        t = struct.unpack_from("<I", b, o)[0]
        o = skip_value(b, o + 4, t)
        if key == "general.alignment":
            align = struct.unpack_from("<I", b, o - 4)[0]
        kvs.append((key, b[start:o]))
    ti_start = o
    for _ in range(nt):
        n = struct.unpack_from("<Q", b, o)[0]
        o += 8 + n
        nd = struct.unpack_from("<I", b, o)[0]
        o += 4 + 8 * nd + 4 + 8
    ti = b[ti_start:o]
    data_start = (o + align - 1) // align * align
    return ver, kvs, ti, nt, align, b[data_start:]


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    ver, kvs, ti, nt, align, data = parse(sys.argv[1])
    _, donor, _, _, _, _ = parse(sys.argv[2])
    tok = [(k, raw) for k, raw in donor if k.startswith("tokenizer.")]
    if not tok:
        sys.exit(f"{sys.argv[2]}: no tokenizer.* keys")
    names = {k for k, _ in tok}
    kvs = [(k, raw) for k, raw in kvs if k not in names] + tok
    out = bytearray(b"GGUF" + struct.pack("<IQQ", ver, nt, len(kvs)))
    for _, raw in kvs:
        out += raw
    out += ti
    out += b"\0" * (-len(out) % align)
    out += data
    with open(sys.argv[3], "wb") as f:
        f.write(out)


if __name__ == "__main__":
    main()
