"""The CPU's vendor, features and L2 cache, for the choices whose measured winner differs
between CPUs: MKL on by default (:mod:`._mkl`), the kernels' own matrix-vector product for a
batch of one and up to which size (:mod:`._blas`) and their own packed GEMM (:mod:`._packed`)."""
from __future__ import annotations

import os

__all__ = ["vendor", "flags", "l2_bytes", "INTEL", "AVX512", "L2_BYTES"]


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


def _read(path: str) -> str:
    with open(path, encoding="ascii") as f:
        return f.read().strip()


def l2_bytes(cache_dir: str = "/sys/devices/system/cpu/cpu0/cache") -> int:
    """The size of one core's L2 cache in bytes, as Linux describes CPU 0's caches
    (``index*/level`` 2, ``type`` Data or Unified, ``size`` such as ``2048K``); 0 where it
    cannot be read (not Linux, no such entry, an unexpected form)."""
    try:
        entries = sorted(os.listdir(cache_dir))
    except OSError:
        return 0
    for entry in entries:
        try:
            level, kind, size = (_read(os.path.join(cache_dir, entry, name))
                                 for name in ("level", "type", "size"))
        except (OSError, UnicodeDecodeError):
            continue
        if level != "2" or kind not in ("Data", "Unified"):
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:].upper(), 1)
        digits = size[:-1] if scale != 1 else size
        return int(digits) * scale if digits.isdigit() else 0
    return 0


#: an Intel CPU, or one whose vendor cannot be read (the choices made on the Intel Xeon of
#: the earlier rounds stay where nothing else was measured)
INTEL = vendor() in ("GenuineIntel", "")
#: AVX-512 (with FMA): sixteen-float vector registers, what :mod:`._microkernel` is written for
AVX512 = {"avx512f", "fma"} <= flags()
#: one core's L2 cache (bytes; 0: unknown): how large a matrix stays in it from step to step
L2_BYTES = l2_bytes()
