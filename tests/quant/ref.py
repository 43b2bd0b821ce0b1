#!/usr/bin/python3
"""Independent oracle for tests/test_quant.c (numpy only, written from the format description).

  ref.py quant Q8_0|Q4_0 IN.f32 OUT.bin   quantize float32 values with ggml's reference rules
  ref.py deq   Q4_K|Q6_K|Q8_0|Q4_0|Q4_1 IN.bin OUT.f32   dequantize blocks
"""
import sys

import numpy as np

F32 = np.float32


def f16_bytes(v):
    return np.array([v], dtype=np.float32).astype(np.float16).tobytes()


def f16_val(b):
    return float(np.frombuffer(b, dtype=np.float16)[0])


def quant_q8_0(x):
    out = bytearray()
    for blk in x.reshape(-1, 32):
        amax = F32(np.max(np.abs(blk)))
        d = F32(amax / F32(127))
        idv = F32(F32(1) / d) if d != 0 else F32(0)
        v = (blk * idv).astype(np.float32).astype(np.float64)
        q = np.sign(v) * np.floor(np.abs(v) + 0.5)  # round half away from zero
        out += f16_bytes(d) + q.astype(np.int8).tobytes()
    return bytes(out)


def quant_q4_0(x):
    out = bytearray()
    for blk in x.reshape(-1, 32):
        i = int(np.argmax(np.abs(blk)))  # first index of the largest magnitude
        mx = blk[i]
        d = F32(mx / F32(-8))
        idv = F32(F32(1) / d) if d != 0 else F32(0)
        v = (blk * idv).astype(np.float32) + F32(8.5)
        q = np.minimum(15, np.trunc(v.astype(np.float64))).astype(np.uint8)
        out += f16_bytes(d) + (q[:16] | (q[16:] << 4)).astype(np.uint8).tobytes()
    return bytes(out)


def bits(byte_arr, pos, width):
    """read `width` bits starting at bit `pos` of a little-endian bit string"""
    v = 0
    for k in range(width):
        b = pos + k
        v |= ((byte_arr[b // 8] >> (b % 8)) & 1) << k
    return v


def deq_q4_k(blob):
    ys = []
    for off in range(0, len(blob), 144):
        b = blob[off:off + 144]
        d, dmin = f16_val(b[0:2]), f16_val(b[2:4])
        s = b[4:16]
        # 6-bit fields: scale j<4 in s[j] bits 0-5, min j<4 in s[j+4] bits 0-5;
        # scale j>=4: low 4 bits in s[j+4] bits 0-3, high 2 bits in s[j-4] bits 6-7;
        # min j>=4: low 4 bits in s[j+4] bits 4-7, high 2 bits in s[j] bits 6-7.
        sc, mn = [], []
        for j in range(8):
            if j < 4:
                sc.append(s[j] % 64)
                mn.append(s[j + 4] % 64)
            else:
                sc.append(s[j + 4] % 16 + 16 * (s[j - 4] // 64))
                mn.append(s[j + 4] // 16 + 16 * (s[j] // 64))
        qs = b[16:]
        for j in range(8):
            chunk = qs[32 * (j // 2):32 * (j // 2) + 32]
            for l in range(32):
                q = chunk[l] % 16 if j % 2 == 0 else chunk[l] // 16
                ys.append(d * sc[j] * q - dmin * mn[j])
    return np.array(ys, dtype=np.float64)


def deq_q6_k(blob):
    ys = []
    for off in range(0, len(blob), 210):
        b = blob[off:off + 210]
        ql, qh = b[0:128], b[128:192]
        sc = np.frombuffer(b[192:208], dtype=np.int8).astype(int)
        d = f16_val(b[208:210])
        for i in range(256):
            half, r = divmod(i, 128)       # 128-element halves
            k, l = divmod(r, 32)           # quarter k, lane l
            lowbyte = ql[64 * half + l + 32 * (k % 2)]
            low = lowbyte % 16 if k < 2 else lowbyte // 16
            high = (qh[32 * half + l] >> (2 * k)) & 3
            q = low + 16 * high - 32
            ys.append(d * sc[8 * half + 2 * k + l // 16] * q)
    return np.array(ys, dtype=np.float64)


def deq_q8_0(blob):
    ys = []
    for off in range(0, len(blob), 34):
        d = f16_val(blob[off:off + 2])
        ys += [d * v for v in np.frombuffer(blob[off + 2:off + 34], dtype=np.int8)]
    return np.array(ys, dtype=np.float64)


def deq_q4_0(blob):
    ys = []
    for off in range(0, len(blob), 18):
        d = f16_val(blob[off:off + 2])
        qs = blob[off + 2:off + 18]
        ys += [d * (qs[j] % 16 - 8) for j in range(16)] + [d * (qs[j] // 16 - 8) for j in range(16)]
    return np.array(ys, dtype=np.float64)


def deq_q4_1(blob):
    ys = []
    for off in range(0, len(blob), 20):
        d, m = f16_val(blob[off:off + 2]), f16_val(blob[off + 2:off + 4])
        qs = blob[off + 4:off + 20]
        ys += [d * (qs[j] % 16) + m for j in range(16)] + [d * (qs[j] // 16) + m for j in range(16)]
    return np.array(ys, dtype=np.float64)


def main():
    mode, typ, src, dst = sys.argv[1:5]
    data = open(src, "rb").read()
    if mode == "quant":
        x = np.frombuffer(data, dtype=np.float32)
        out = quant_q8_0(x) if typ == "Q8_0" else quant_q4_0(x)
        open(dst, "wb").write(out)
    else:
        f = {"Q4_K": deq_q4_k, "Q6_K": deq_q6_k, "Q8_0": deq_q8_0, "Q4_0": deq_q4_0, "Q4_1": deq_q4_1}[typ]
        f(data).astype(np.float32).tofile(dst)


if __name__ == "__main__":
    main()
