"""The CPU's vendor and features, for the choices whose measured winner differs between CPUs:
MKL on by default (:mod:`._mkl`), the kernels' own matrix-vector product for a batch of one
(:mod:`._blas`) and their own packed GEMM (:mod:`._packed`)."""
from __future__ import annotations

__all__ = ["vendor", "flags", "INTEL", "AVX512"]


def _cpuinfo(key: str) -> str:
    """The value of the first ``key`` line of ``/proc/cpuinfo``, or "" where it cannot be read
    (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


def vendor() -> str:
    """The CPU's vendor as Linux names it (``GenuineIntel``, ``AuthenticAMD``, ...), or ""
    where it cannot be read."""
    return _cpuinfo("vendor_id")


def flags() -> frozenset:
    """The CPU's feature flags as Linux names them (``avx512f``, ``fma``, ...); empty where
    they cannot be read."""
    return frozenset(_cpuinfo("flags").split())


#: an Intel CPU, or one whose vendor cannot be read (the choices made on the Intel Xeon of
#: the earlier rounds stay where nothing else was measured)
INTEL = vendor() in ("GenuineIntel", "")
#: AVX-512 (with FMA): sixteen-float vector registers, what :mod:`._microkernel` is written for
AVX512 = {"avx512f", "fma"} <= flags()
