#!/usr/bin/env python
"""The per-step recurrent GEMM alone, in the ways the time loop could run it.

The compiled loops run, at every step, ``GX[t] += h_{t-1} @ W_hh^T`` through NumPy's OpenBLAS
with the threads ``elman.threads`` grants. This script times T such steps in a compiled loop (the
loops' own BLAS binding, ``elman.fast._blas``) for the per-step shapes of ``bench_rnn.py``'s grid,
in the ways issue #17 proposes to try:

``openblas-1``/``openblas-2``  one call per step, 1 or 2 BLAS threads (what runs now);
``split-openblas``  the batch's rows in two halves, each half's whole time loop in its own Python
                    thread (the compiled loops release the GIL), single-threaded BLAS: no thread
                    synchronisation per step, and the gate math would run in parallel too;
``split-mkl-packed``  the same with MKL (``pip install mkl``), sequential, ``W_hh^T`` packed once
                    per sequence (``cblas_sgemm_pack``/``cblas_sgemm_compute``) instead of
                    repacked by every call: only when ``--mkl`` names ``libmkl_rt`` or the ``mkl``
                    wheel is installed.

Rates are GFLOP/s of the GEMMs alone (best and median of ``--repeats``), float32.

    python benchmarks/bench_step_gemm.py
    python benchmarks/bench_step_gemm.py --mkl /path/to/libmkl_rt.so.3
"""
from __future__ import annotations

import argparse
import ctypes
import glob
import os
import statistics
import sys
import threading
import time

# (N, H, gates, T): the per-step GEMM (N x H) @ (H x gates*H) of the grid's larger configs
SHAPES = [(64, 128, 4, 50), (64, 256, 4, 30), (64, 256, 3, 30), (128, 512, 4, 10),
          (128, 512, 3, 10), (128, 512, 1, 20)]
_ROW_MAJOR, _NO_TRANS, _PACKED, _B_MATRIX = 101, 111, 151, 162


def _find_mkl(path):
    if path:
        return path
    found = sorted(glob.glob(os.path.join(sys.prefix, "lib", "libmkl_rt.so*")))
    return found[0] if found else None


def _mkl_bindings(path):
    """(compute kernel, pack function, size function) from ``libmkl_rt`` run sequentially."""
    os.environ["MKL_THREADING_LAYER"] = "SEQUENTIAL"       # read when MKL loads
    import llvmlite.binding as llvm
    import numpy as np
    from numba import njit, types
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    llvm.load_library_permanently(path)
    lib = ctypes.CDLL(path)
    i32, f32 = types.int32, types.float32
    ptr = types.CPointer(f32)
    compute = types.ExternalFunction("cblas_sgemm_compute", types.void(
        i32, i32, i32, i32, i32, i32, ptr, i32, ptr, i32, f32, ptr, i32))
    size = lib.cblas_sgemm_pack_get_size
    size.restype, size.argtypes = ctypes.c_size_t, [ctypes.c_int] * 4
    pack = lib.cblas_sgemm_pack
    pack.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int,
                                          ctypes.c_void_p]

    @njit(error_model="numpy", nogil=True)
    def loop(GX, S, packed, K):
        N, P = GX.shape[1], S.shape[2]
        one = np.float32(1)
        for t in range(GX.shape[0]):
            compute(_ROW_MAJOR, _NO_TRANS, _PACKED, N, K, P, S[t].ctypes, S.strides[1] // 4,
                    packed.ctypes, K, one, GX[t].ctypes, GX.strides[1] // 4)
    return loop, pack, size


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--mkl", metavar="LIBMKL_RT", help="path of libmkl_rt (default: the mkl "
                    "wheel's, if installed)")
    args = ap.parse_args(argv)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if os.environ.get(k):                 # they slow NumPy's OpenBLAS (see bench_rnn.py)
            env = {k: v for k, v in os.environ.items()
                   if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
    mkl = _find_mkl(args.mkl)
    mkl_loop = _mkl_bindings(mkl) if mkl else None
    import numpy as np
    from numba import njit
    from threadpoolctl import threadpool_limits

    from elman.fast._blas import gemm_acc

    @njit(error_model="numpy", nogil=True)
    def openblas_loop(GX, S, W_T):
        for t in range(GX.shape[0]):
            gemm_acc(S[t], W_T, GX[t])

    def two(fn, first, second):
        other = threading.Thread(target=fn, args=second)
        other.start()
        fn(*first)
        other.join()

    def rates(fn, flops):
        fn()
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return flops / min(times) / 1e9, flops / statistics.median(times) / 1e9

    rng = np.random.default_rng(0)
    print(f"per-step GEMM GFLOP/s (best/median of {args.repeats}), float32; MKL: "
          f"{mkl or 'not found'}; 1-minute load average {os.getloadavg()[0]:.2f}")
    print("| N x H x gates*H (T steps) | openblas-1 | openblas-2 | split-openblas | "
          "split-mkl-packed |")
    print("|---|--:|--:|--:|--:|")
    for N, H, G, T in SHAPES:
        K, h = G * H, N // 2
        GX = rng.standard_normal((T, N, K), dtype=np.float32)
        S = rng.standard_normal((T, N, H), dtype=np.float32)
        W_T = np.ascontiguousarray(rng.standard_normal((H, K), dtype=np.float32))
        flops = 2.0 * N * H * K * T
        runs = {"openblas-1": (1, lambda: openblas_loop(GX, S, W_T)),
                "openblas-2": (2, lambda: openblas_loop(GX, S, W_T)),
                "split-openblas": (1, lambda: two(openblas_loop, (GX[:, :h], S[:, :h], W_T),
                                                  (GX[:, h:], S[:, h:], W_T)))}
        if mkl_loop is not None:
            loop, pack, size = mkl_loop
            packed = np.empty(size(_B_MATRIX, h, K, H) // 4 + 16, np.float32)
            pack(_ROW_MAJOR, _B_MATRIX, _NO_TRANS, h, K, H, 1.0, W_T.ctypes.data, K,
                 packed.ctypes.data)
            check, expected = GX.copy(), GX.copy()
            openblas_loop(expected, S, W_T)
            two(loop, (check[:, :h], S[:, :h], packed, K), (check[:, h:], S[:, h:], packed, K))
            assert np.allclose(check, expected, rtol=1e-4, atol=1e-3), "MKL disagrees"
            runs["split-mkl-packed"] = (1, lambda: two(
                loop, (GX[:, :h], S[:, :h], packed, K), (GX[:, h:], S[:, h:], packed, K)))
        cells = []
        for name in ("openblas-1", "openblas-2", "split-openblas", "split-mkl-packed"):
            if name not in runs:
                cells.append("-")
                continue
            threads, fn = runs[name]
            with threadpool_limits(threads, user_api="blas"):
                best, median = rates(fn, flops)
            cells.append(f"{best:.0f} / {median:.0f}")
        print(f"| {N} x {H} x {K} ({T}) | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
