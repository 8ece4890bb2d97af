"""``wide_vectors()``: the kernels' element-wise loops on sixteen-float (AVX-512) vectors.

LLVM's loop vectoriser takes the vector width its target prefers, and for the Intel cores
with AVX-512 (LLVM takes this Xeon for a "rocketlake") that is 256 bits: the ``prefer-256-bit``
tuning, chosen for older Xeons, whose clocks dropped under 512-bit arithmetic. So every
numba loop here ran on eight-float vectors, although the CPU has sixteen-float ones (the
kernels' own GEMM, :mod:`._microkernel`, writes its ``<16 x float>`` by hand). The function
attribute ``"prefer-vector-width"="512"`` lifts that for one function; numba has no option
for it, so this intrinsic adds it to the compiled function it is called from: the time loops
call it through :func:`._loop.step_at`, the pair of threads through
:func:`._pair.pair_steps`; the layer norm's row sums, the batch of one's matrix-vector loop
(:mod:`._blas`) and Adam's step directly.

Measured on the Intel Xeon (Emerald Rapids, numba 0.68, LLVM 22) of 2026-12-07, the code
before and after in alternating processes (two threads, 0.4 s of calls after a 0.1 s pause,
medians of 7, then of 5 such pairs): training steps of the LN-GRU and the LN-LSTM at (64,
100, 32, 128) 1.043x and 1.012x as fast, of the GRU and the LSTM there 1.029x and 1.026x, of
the two-layer LSTM at (64, 100, 128, 256) 1.019x, of the bidirectional RNN at (128, 200,
256, 512) 1.009x; inference of the LSTM at (64, 100, 32, 128) 1.044x, of two LSTM layers at
(32, 50, 16, 64) 1.090x, and at batch 1 (1, 50, 32, H): the LSTM at H = 128 1.082x, two
bidirectional GRU layers there 1.031x, two LSTM layers at H = 256 1.017x (two
bidirectional: 1.006x; those read their weights from L2 at its pace whatever the vectors).
Element-wise results are the same bit for bit; sums compiled with licence to reassociate
(the layer norm's row sums, the matrix-vector loop's) add in another order. Without AVX-512
the attribute would ask for nothing the CPU has; it is added only where
:data:`._cpu.AVX512` says the CPU has AVX-512 (numba's cache is per CPU, so a kernel compiled
here is never loaded on a CPU without).
"""
from numba import types
from numba.extending import intrinsic

from ._cpu import AVX512

__all__ = ["wide_vectors", "ATTRIBUTE"]

#: the LLVM function attribute (a string attribute: llvmlite's own list does not know it)
ATTRIBUTE = '"prefer-vector-width"="512"'


@intrinsic
def wide_vectors(typingctx):
    """Compiled code only: the function this call is compiled into (after numba's inlining,
    the kernel that calls an ``inline="always"`` helper that calls it) gets
    :data:`ATTRIBUTE`, where the CPU has AVX-512. Costs nothing at run time."""
    def codegen(context, builder, signature, args):
        if AVX512:
            # set.add: llvmlite's FunctionAttributes.add refuses names outside its own list
            set.add(builder.function.attributes, ATTRIBUTE)
        return context.get_dummy_value()
    return types.void(), codegen
