#!/usr/bin/python3
"""Independent GGUF header dumper (struct + zlib only): the oracle for tests/test_gguf.c.

Usage: dump.py FILE
Prints one line per item, in the same format test_gguf.c produces from gguf.h:
  version V / n_kv N / n_tensors N / alignment A
  kv KEY TYPE VALUE            (scalars; floats as %.9g, bools true/false, strings escaped)
  kv KEY arr ELEMTYPE N crc32=C first=[...]   (arrays: crc32 over the items as stored, first 3 items)
  tensor NAME TYPE ne=a,b,.. offset=O nbytes=B crc32=C
"""
import struct
import sys
import zlib

VT = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"]
FMT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q", 12: "<d"}
# ggml type -> (name, block elements, block bytes)
GT = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 8: ("Q8_0", 32, 34),
      12: ("Q4_K", 256, 144), 14: ("Q6_K", 256, 210), 30: ("BF16", 1, 2)}


def esc(b):
    out = []
    for c in b:
        if c == 0x5C:
            out.append("\\\\")
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        else:
            out.append("\\x%02x" % c)
    return "".join(out)


def fmt_scalar(t, v):
    if t in (6, 12):
        return "%.9g" % v
    if t == 7:
        return "true" if v else "false"
    if t == 8:
        return '"' + esc(v) + '"'
    return str(v)


class R:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, n):
        if n > len(self.b) - self.p:
            raise ValueError("truncated")
        s = self.b[self.p:self.p + n]
        self.p += n
        return s

    def u(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def s(self):
        return self.take(self.u("<Q"))


def load(path):
    """(kvs, tensors): kvs = {key: (type, value or (elem_type, [items]), raw value bytes)},
    tensors = {name: (type_name, ne, raw data bytes)}; for tests that need the values, not the dump."""
    b = open(path, "rb").read()
    r = R(b)
    assert r.take(4) == b"GGUF", "bad magic"
    r.u("<I")
    nt, nkv = r.u("<Q"), r.u("<Q")
    kvs, align = {}, 32
    for _ in range(nkv):
        key = r.s().decode("utf-8", "surrogateescape")
        t = r.u("<I")
        start = r.p
        if t == 9:
            et, n = r.u("<I"), r.u("<Q")
            v = (et, [r.s() if et == 8 else r.u(FMT[et]) for _ in range(n)])
        elif t == 8:
            v = r.s()
        else:
            v = r.u(FMT[t])
            if key == "general.alignment":
                align = v
        kvs[key] = (t, v, b[start:r.p])
    infos = []
    for _ in range(nt):
        name = r.s().decode("utf-8", "surrogateescape")
        nd = r.u("<I")
        ne = [r.u("<Q") for _ in range(nd)]
        infos.append((name, ne, r.u("<I"), r.u("<Q")))
    ds = (r.p + align - 1) // align * align
    tensors = {}
    for name, ne, ty, off in infos:
        tn, be, bb = GT[ty]
        n = 1
        for x in ne:
            n *= x
        tensors[name] = (tn, ne, b[ds + off:ds + off + n // be * bb])
    return kvs, tensors


def main(path):
    b = open(path, "rb").read()
    r = R(b)
    assert r.take(4) == b"GGUF", "bad magic"
    ver = r.u("<I")
    nt, nkv = r.u("<Q"), r.u("<Q")
    out = ["version %d" % ver, "n_kv %d" % nkv, "n_tensors %d" % nt]
    align = 32
    kvlines = []
    for _ in range(nkv):
        key = r.s().decode("utf-8", "surrogateescape")
        t = r.u("<I")
        if t == 9:
            et, n = r.u("<I"), r.u("<Q")
            start = r.p
            items = []
            for i in range(n):
                if et == 8:
                    v = r.s()
                else:
                    v = r.u(FMT[et])
                if i < 3:
                    items.append(fmt_scalar(et, v))
            crc = zlib.crc32(b[start:r.p])
            kvlines.append("kv %s arr %s %d crc32=%08x first=[%s]" % (key, VT[et], n, crc, ",".join(items)))
        elif t == 8:
            kvlines.append("kv %s string %s" % (key, fmt_scalar(8, r.s())))
        else:
            v = r.u(FMT[t])
            if key == "general.alignment":
                align = v
            kvlines.append("kv %s %s %s" % (key, VT[t], fmt_scalar(t, v)))
    out.append("alignment %d" % align)
    out += kvlines
    infos = []
    for _ in range(nt):
        name = r.s().decode("utf-8", "surrogateescape")
        nd = r.u("<I")
        ne = [r.u("<Q") for _ in range(nd)]
        ty = r.u("<I")
        off = r.u("<Q")
        infos.append((name, ne, ty, off))
    ds = (r.p + align - 1) // align * align
    for name, ne, ty, off in infos:
        tn, be, bb = GT[ty]
        n = 1
        for x in ne:
            n *= x
        nbytes = n // be * bb
        data = b[ds + off:ds + off + nbytes]
        assert len(data) == nbytes, "tensor data past end"
        out.append("tensor %s %s ne=%s offset=%d nbytes=%d crc32=%08x" % (
            name, tn, ",".join(str(x) for x in ne), off, nbytes, zlib.crc32(data)))
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
