#!/usr/bin/env python3
"""NF4 reference values for ift's 4-bit base (QLoRA), from numpy alone (no bitsandbytes).

    /tmp/goldvenv/bin/python tools/golden/make_nf4_golden.py   # writes tests/fixtures/nf4/nf4.safetensors

The code book is the 16 NF4 values of the QLoRA paper (Dettmers et al. 2023, appendix E), written
here independently of ift's C++ table. For random tensors of awkward lengths (a partial last block
included) it stores, per tensor: the input (fp32), the absmax of each block of 64 (fp32: max |x|),
the codes (the index of the code-book value nearest x / absmax, computed in fp32; stored as F32, one per
value) and the dequantized values code_book[code] * absmax (fp32). The C++ test requires its
quantizer to give these codes bitwise and these absmax to the last bit.
"""
import os

import numpy as np
import safetensors.numpy

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)
BLOCK = 64


def quantize(x):
    n = x.size
    blocks = (n + BLOCK - 1) // BLOCK
    absmax = np.zeros(blocks, dtype=np.float32)
    codes = np.zeros(n, dtype=np.uint8)
    for b in range(blocks):
        v = x[b * BLOCK:(b + 1) * BLOCK]
        a = np.float32(np.max(np.abs(v)))
        absmax[b] = a
        scaled = (v / a).astype(np.float32) if a > 0 else np.zeros_like(v)
        # Nearest code; a tie (measure zero here) would go to the lower index.
        d = np.abs(scaled[:, None] - NF4[None, :]).astype(np.float32)
        codes[b * BLOCK:(b + 1) * BLOCK] = np.argmin(d, axis=1).astype(np.uint8)
    deq = (NF4[codes] * np.repeat(absmax, BLOCK)[:n]).astype(np.float32)
    return absmax, codes, deq


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.normpath(os.path.join(here, "..", "..", "tests", "fixtures", "nf4", "nf4.safetensors"))
    rng = np.random.default_rng(20261201)
    tensors = {}
    for name, n, scale in [("normal_1000", 1000, 0.02), ("normal_4096", 4096, 1.0), ("heavy_129", 129, 3.0),
                           ("tiny_5", 5, 1e-3)]:
        x = (rng.standard_normal(n) * scale).astype(np.float32)
        if name.startswith("heavy"):
            x = (rng.standard_t(2, n) * scale).astype(np.float32)
        if name == "normal_4096":
            x[64:128] = 0.0  # an all-zero block: absmax 0, every code the zero code
        absmax, codes, deq = quantize(x)
        tensors[name + ".x"] = x
        tensors[name + ".absmax"] = absmax
        tensors[name + ".codes"] = codes.astype(np.float32)  # safetensors as ift reads it: F32, exact
        tensors[name + ".dequant"] = deq
    tensors["code_book"] = NF4
    safetensors.numpy.save_file(tensors, out, metadata={"generator": "tools/golden/make_nf4_golden.py numpy="
                                                                      + np.__version__})
    os.chmod(out, 0o644)
    print(f"wrote {out}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
