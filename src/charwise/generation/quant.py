"""int8 weights with one scale per row, shared by the web export (which dequantizes them in
the page) and int8 sampling (which multiplies by them through fbgemm's int8 kernel).

Symmetric per-row quantization: w = q * scale[:, None], scale = max|row| / 127, q in
[-127, 127]. `Int8Matrix` keeps a weight matrix that way and computes x @ W for float32 x:
fbgemm quantizes x to 8 bits on each call (one scale for the whole x), multiplies with
integer arithmetic (AVX-512 VNNI where present) and returns float32, which is then scaled by
the rows' scales. A one-character sampling step is bound by reading the recurrent weights, so
a quarter of fp32's bytes is what makes it faster (benchmarks/sampling.py).
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import CharwiseError


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) float32 -> (int8 q, float32 per-row scale); w ~= q * scale[:, None]."""
    w = np.asarray(w, np.float32)
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def dequantize_rows(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32(q) * float32(scale), rounded to float32 (what the web page computes with)."""
    return q.astype(np.float32) * scale.astype(np.float32)[:, None]


class Int8Matrix:
    """x (S, K) float32 -> approximately x @ w, for a (K, N) float32 matrix w kept as int8
    rows of w.T with one scale each.

    The kernel is torch's fbgemm int8-weight / fp32-activation linear. Its newer twin,
    torch.ops.quantized.linear_dynamic (quantized tensors, per-channel scales), computes the
    same thing with a much larger fixed cost per call, which dominates one row of x
    (benchmarks/README.md, section 3b), so the older entry point is used: it takes one weight
    scale, so it is given scale 1 and zero point 0 (the integer product) and the per-row
    scales are applied here."""

    def __init__(self, w: np.ndarray):
        import torch
        q, self.scale = quantize_rows(np.asarray(w, np.float32).T)     # (N, K), (N,)
        self.q = torch.from_numpy(q).contiguous()
        self.col_sums = self.q.sum(1, dtype=torch.int32)      # fbgemm's zero-point correction
        self.zero_bias = torch.zeros(q.shape[0])
        try:
            with warnings.catch_warnings():          # "deprecated": warned once per process
                warnings.simplefilter("ignore")
                self.packed = torch.fbgemm_pack_quantized_matrix(self.q)
                self._linear = torch.fbgemm_linear_int8_weight_fp32_activation
                self(np.zeros((1, q.shape[1]), np.float32))
        except (AttributeError, RuntimeError) as e:
            raise CharwiseError("int8 sampling needs PyTorch's fbgemm int8 kernels (x86 CPUs); "
                                f"use precision fp32 here ({str(e).splitlines()[0][:80]})") from None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch
        y = self._linear(torch.from_numpy(np.ascontiguousarray(x, np.float32)), self.q, self.packed,
                         self.col_sums, 1.0, 0, self.zero_bias).numpy()
        y *= self.scale                                  # y is fresh: scale it in place
        return y
