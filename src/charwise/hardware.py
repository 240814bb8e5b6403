"""What this CPU runs natively, decided from its capabilities, never by running a kernel it may
lack (on a CPU without it that would be a crash or, for int8, silently wrong numbers).

Two kinds of kernel depend on the CPU here:
- bf16: oneDNN's bf16 LSTM and matmul run in hardware with AVX512-BF16 or AMX; on AVX2 CPUs
  (most laptops) oneDNN cannot even build the bf16 LSTM primitive, and on AVX-512 without
  BF16 it emulates bf16, slower than fp32.
- int8 sampling: fbgemm's int8 product adds pairs of u8*s8 products in 16-bit registers
  (vpmaddubsw) unless the CPU has VNNI (vpdpbusd, 32-bit sums). Without VNNI the sums saturate:
  the product is ~10 % off and no faster than fp32, so int8 is offered only with VNNI.

The caps a user (or CI) sets to make a CPU look plainer are honoured, so that a capped run
decides as the plainer CPU would: ATEN_CPU_CAPABILITY (torch's own kernels: "avx2", "default")
and ONEDNN_MAX_CPU_ISA (oneDNN's: "AVX2", "AVX512_CORE", ...).
"""
from __future__ import annotations

import os
from pathlib import Path

CPUINFO = "/proc/cpuinfo"
# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA) from which bf16 runs in hardware; a cap below these
# (SSE41, AVX, AVX2, AVX2_VNNI, AVX2_VNNI_2, AVX512_CORE, AVX512_CORE_VNNI) leaves no bf16.
ONEDNN_BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512", "AVX512_CORE_AMX",
                    "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
                    "AVX10_2_512_AMX_2", "DEFAULT", "ALL")
# ATEN_CPU_CAPABILITY values that mean "no AVX-512 at all" for torch's and fbgemm's kernels
ATEN_PLAIN = ("default", "avx2", "zvector", "vsx", "sve256")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "amx_int8")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (/proc/cpuinfo's first "flags" line); empty where unreadable."""
    try:
        text = Path(CPUINFO).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset(text.split())          # no "flags" key: whatever words it has


def _aten_capped() -> bool:
    return os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower() in ATEN_PLAIN


def _onednn_allows_bf16() -> bool:
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()
    return not cap or cap in ONEDNN_BF16_ISAS


def cpu_has_fast_bf16() -> bool:
    """AMX (Sapphire Rapids and later) or AVX512-BF16, not capped away: bf16 runs in hardware."""
    return (bool(cpu_flags() & set(BF16_FLAGS)) and _onednn_allows_bf16() and not _aten_capped())


def cpu_has_exact_int8() -> bool:
    """VNNI (AVX-512 VNNI or AMX int8), not capped away: int8 products with 32-bit sums."""
    return bool(cpu_flags() & set(INT8_FLAGS)) and not _aten_capped()


def cpu_class() -> str:
    """AVX2 / AVX-512 / AVX-512-BF16 / AMX: the class benchmarks and run.json name a CPU by."""
    flags = cpu_flags()
    if _aten_capped() or "avx512f" not in flags:
        return "AVX2" if "avx2" in flags else "plain"
    if "amx_bf16" in flags and _onednn_allows_bf16():
        return "AMX"
    return "AVX-512-BF16" if cpu_has_fast_bf16() else "AVX-512"


def why_no_bf16() -> str:
    """The sentence a refused --precision bf16 ends with on this CPU."""
    if cpu_flags() & set(BF16_FLAGS):
        return ("this CPU has bf16 instructions but ATEN_CPU_CAPABILITY/ONEDNN_MAX_CPU_ISA "
                "cap them away")
    return ("this CPU has neither AVX512-BF16 nor AMX (its class: " + cpu_class() + "), so bf16 "
            "would be emulated or not run at all")


def why_no_int8() -> str:
    if cpu_flags() & set(INT8_FLAGS):
        return "this CPU has VNNI but ATEN_CPU_CAPABILITY caps it away"
    return ("this CPU has no AVX-512 VNNI (its class: " + cpu_class() + "): int8 sums would "
            "saturate and run no faster than fp32")
