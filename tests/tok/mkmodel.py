#!/usr/bin/python3
"""Write variants of a SentencePiece BPE model that exercise rarely used paths (USER_DEFINED pieces, UNUSED pieces
and their resegmentation, remove_extra_whitespaces, no dummy prefix, no byte fallback), for the property test.
usage: mkmodel.py SRC.model OUT.model VARIANT [NFKC_SRC.model]
       (VARIANT: user | ws | nobytes | suffix | noescape | nfkc; nfkc takes the normalizer of NFKC_SRC)"""
import random, struct, sys

src, out, variant = sys.argv[1:4]
data = open(src, "rb").read()


def varint(b, i):
    r = s = 0
    while True:
        c = b[i]; i += 1
        r |= (c & 0x7F) << s; s += 7
        if c < 0x80: return r, i


def enc_varint(x):
    o = bytearray()
    while True:
        if x > 0x7F: o.append((x & 0x7F) | 0x80); x >>= 7
        else: o.append(x); return bytes(o)


def fields(b):
    i, res = 0, []
    while i < len(b):
        k, i = varint(b, i); f, w = k >> 3, k & 7
        if w == 0: v, i = varint(b, i)
        elif w == 2:
            n, i = varint(b, i); v = b[i:i + n]; i += n
        elif w == 5: v = b[i:i + 4]; i += 4
        elif w == 1: v = b[i:i + 8]; i += 8
        res.append((f, w, v))
    return res


def msg_field(f, payload): return enc_varint(f << 3 | 2) + enc_varint(len(payload)) + payload
def int_field(f, v): return enc_varint(f << 3) + enc_varint(v)


pieces, trainer, norm, rest = [], b"", b"", b""
for f, w, v in fields(data):
    if f == 1:
        p = {"piece": b"", "score": 0.0, "type": 1}
        for f2, w2, v2 in fields(v):
            if f2 == 1: p["piece"] = v2
            elif f2 == 2: p["score"] = struct.unpack("<f", v2)[0]
            elif f2 == 3: p["type"] = v2
        pieces.append(p)
    elif f == 2: trainer = v
    elif f == 3: norm = v

rng = random.Random(5)
if variant in ("user", "ws"):
    for u in ["<eod>", "<sep>", "[MASK]", "\u2581\u2581\u2581", "ab", "你好", "ation"]:
        pieces = [p for p in pieces if p["piece"] != u.encode()]
        pieces.append({"piece": u.encode(), "score": 0.0, "type": 4})
    normal = [p for p in pieces if p["type"] == 1 and len(p["piece"].decode()) >= 2]
    for p in rng.sample(normal, 400):
        p["type"] = 5
    # frequent English pieces too, so that resegmentation happens on ordinary text
    for s in ["\u2581the", "in", "er", "\u2581a", "on", "\u2581th", "es", "\u2581s"]:
        for p in pieces:
            if p["piece"] == s.encode(): p["type"] = 5
if variant == "ws":
    norm += int_field(3, 0) + int_field(4, 1)      # add_dummy_prefix = false, remove_extra_whitespaces = true
if variant == "suffix":
    trainer += int_field(24, 1)                    # treat_whitespace_as_suffix = true
if variant == "noescape":
    norm += int_field(5, 0)                        # escape_whitespaces = false
if variant == "nfkc":
    # the nmt_nfkc normalizer (precompiled charsmap) of sentencepiece's own test model
    spm_test = sys.argv[4]
    for f, w, v in fields(open(spm_test, "rb").read()):
        if f == 3: norm = v
if variant == "nobytes":
    pieces = [p for p in pieces if p["type"] != 6]
    trainer += int_field(35, 0)                    # byte_fallback = false

o = bytearray()
for p in pieces:
    body = msg_field(1, p["piece"]) + b"\x15" + struct.pack("<f", p["score"]) + int_field(3, p["type"])
    o += msg_field(1, body)
o += msg_field(2, trainer) + msg_field(3, norm)
open(out, "wb").write(bytes(o))
