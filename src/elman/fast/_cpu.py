"""The CPU's vendor, for the choices whose measured winner differs between Intel's CPUs and
others: MKL on by default (:mod:`._mkl`) and the kernels' own matrix-vector product for a batch
of one (:mod:`._blas`)."""
from __future__ import annotations

__all__ = ["vendor", "INTEL"]


def vendor() -> str:
    """The CPU's vendor as Linux names it (``GenuineIntel``, ``AuthenticAMD``, ...), or ""
    where it cannot be read (no ``/proc/cpuinfo``: not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return ""


#: an Intel CPU, or one whose vendor cannot be read (the choices made on the Intel Xeon of
#: the earlier rounds stay where nothing else was measured)
INTEL = vendor() in ("GenuineIntel", "")
