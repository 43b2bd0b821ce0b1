"""Minimal GGUF v3 reader (numpy), written from shared/spec/formats.md, used by the tests to check what
`moec convert` wrote independently of moec's own reader. read(path) -> (kv dict, tensors dict name ->
(ggml type, ne list, numpy float32 array shaped reversed(ne), i.e. PyTorch order))."""
import struct

import numpy as np

from st_io import bf16_bits_to_f32

SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class _R:
    def __init__(self, b):
        self.b, self.o = b, 0

    def get(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.o)[0]
        self.o += struct.calcsize(fmt)
        return v

    def str(self):
        n = self.get("<Q")
        s = self.b[self.o:self.o + n].decode("utf-8", errors="surrogateescape")
        self.o += n
        return s

    def val(self, t):
        if t == 8:
            return self.str()
        if t == 9:
            et, n = self.get("<I"), self.get("<Q")
            return [self.val(et) for _ in range(n)]
        return self.get(SCALAR[t])


def read_header(b):
    """(kv dict, [(name, ne, ggml type, offset)], absolute start of the tensor data) of the GGUF bytes b (b may be
    just a prefix holding the whole header)."""
    r = _R(b)
    assert b[:4] == b"GGUF", "not a GGUF file"
    r.o = 4
    version = r.get("<I")
    assert version == 3, version
    nt, nkv = r.get("<Q"), r.get("<Q")
    kv = {}
    for _ in range(nkv):
        k = r.str()
        kv[k] = r.val(r.get("<I"))
    infos = []
    for _ in range(nt):
        name = r.str()
        nd = r.get("<I")
        ne = [r.get("<Q") for _ in range(nd)]
        typ, off = r.get("<I"), r.get("<Q")
        infos.append((name, ne, typ, off))
    align = kv.get("general.alignment", 32)
    return kv, infos, (r.o + align - 1) // align * align


def read(path):
    b = open(path, "rb").read()
    kv, infos, start = read_header(b)
    tensors = {}
    for name, ne, typ, off in infos:
        n = int(np.prod(ne))
        p = start + off
        if typ == 0:
            a = np.frombuffer(b, "<f4", n, p).astype(np.float32)
        elif typ == 1:
            a = np.frombuffer(b, "<f2", n, p).astype(np.float32)
        elif typ == 30:
            a = bf16_bits_to_f32(np.frombuffer(b, "<u2", n, p))
        else:
            raise ValueError("type %d not handled" % typ)
        tensors[name] = (typ, ne, a.reshape(list(reversed(ne))))
    return kv, tensors
