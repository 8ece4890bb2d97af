#!/usr/bin/env python
"""elman's cell options against what a PyTorch user would write for them, side by side.

PyTorch has none of these options, so each row's reference is the nearest thing its users write:

``lstm-rdrop``  ``elman.LSTM(recurrent_dropout=0.25)`` against an ``nn.LSTMCell`` stepped in
                Python with the mask on ``h`` before each step ("nn.LSTM + dropout on h via a
                per-step loop", issue #11);
``ln-lstm``     ``elman.LSTM(layer_norm=True)`` against PyTorch's own TorchScript LayerNorm
                LSTM, re-implemented here after ``benchmarks/fastrnns/custom_lstms.py`` of the
                PyTorch repository (``LayerNormLSTMCell`` looped as its ``LSTMLayer``: per step
                ``LN(x W_ih^T) + LN(h W_hh^T)``, gates, ``c = LN(f c + i g)``, ``h = o tanh(c)``;
                the reference the PyTorch team measures; note it keeps the normalised ``c``,
                elman the raw one (Ba et al.), the same work);
``ln-gru``      ``elman.GRU(layer_norm=True)`` against the same TorchScript loop for a GRU
                (custom_lstms.py has no GRU: written here in its style, elman's equations);
``lstm-zoneout`` ``elman.LSTM(zoneout=0.1)`` against an ``nn.LSTMCell`` stepped in Python with
                fresh zoneout masks on ``h`` and ``c`` at every step.

(The peephole LSTM's row against a TorchScript peephole LSTM is in ``bench_rnn.py --cells
peephole``.) Each row times one training step (zero_grad, forward, backward, Adam) of the same
model in elman (compiled fast path) and in the PyTorch reference, on the same CPU in the same
process, alternating repeat by repeat; the table gives medians and the ratio. float32,
``--threads`` threads each.

    python benchmarks/bench_cells.py                   # every row, 7 repeats
    python benchmarks/bench_cells.py --rows ln-lstm    # some rows
    python benchmarks/bench_cells.py --quick           # a tiny smoke run
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

# (N, T, I, H) as in bench_rnn.py
CONFIGS = [(64, 100, 32, 128), (64, 100, 128, 256)]
QUICK = [(4, 6, 3, 8)]
P = 0.25                     # recurrent dropout rate
ZONEOUT = 0.1
ROWS = ("lstm-rdrop", "ln-lstm", "ln-gru", "lstm-zoneout")


def _torch_layer_norm_loops(torch):
    """The TorchScript loops of the ``ln-lstm`` and ``ln-gru`` rows (see the module docstring);
    autograd does their backward. (torch 2.13 deprecates ``torch.jit.script`` in favour of
    ``torch.compile``, which needs a C++ compiler at run time; the script still runs.)"""
    F = torch.nn.functional

    def ln_lstm(x: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_ih: torch.Tensor,
                w_hh: torch.Tensor, g_i: torch.Tensor, b_i: torch.Tensor, g_h: torch.Tensor,
                b_h: torch.Tensor, g_c: torch.Tensor, b_c: torch.Tensor):
        H = w_hh.size(1)
        outs = []
        for t in range(x.size(0)):
            igates = F.layer_norm(torch.mm(x[t], w_ih.t()), [4 * H], g_i, b_i, 1e-5)
            hgates = F.layer_norm(torch.mm(h, w_hh.t()), [4 * H], g_h, b_h, 1e-5)
            i, f, g, o = (igates + hgates).chunk(4, 1)
            c = F.layer_norm(torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g), [H],
                             g_c, b_c, 1e-5)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs), h, c

    def ln_gru(x: torch.Tensor, h: torch.Tensor, w_ih: torch.Tensor, w_hh: torch.Tensor,
               g_i: torch.Tensor, b_i: torch.Tensor, g_h: torch.Tensor, b_h: torch.Tensor,
               bias_ih: torch.Tensor, bias_hh: torch.Tensor):
        H = w_hh.size(1)
        outs = []
        for t in range(x.size(0)):
            gx = F.layer_norm(torch.mm(x[t], w_ih.t()), [3 * H], g_i, b_i, 1e-5) + bias_ih
            gh = F.layer_norm(torch.mm(h, w_hh.t()), [3 * H], g_h, b_h, 1e-5) + bias_hh
            xr, xz, xn = gx.chunk(3, 1)
            hr, hz, hn = gh.chunk(3, 1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs), h

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(ln_lstm), torch.jit.script(ln_gru)


def _rows(np, torch, elman, N, T, I, H, names):
    """[(row name, (elman_step, torch_step))] for one size: each step one training step."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    dout = rng.standard_normal((T, N, H)).astype(np.float32)
    xt, doutt = torch.from_numpy(x), torch.from_numpy(dout)
    loops = _torch_layer_norm_loops(torch) if {"ln-lstm", "ln-gru"} & set(names) else None
    rows = []

    def elman_step_of(layer):
        opt = elman.Adam(layer.parameters(), lr=1e-3)

        def step():
            opt.zero_grad()
            layer(x)
            layer.backward(dout, None, input_grad=False)
            opt.step()
        return step

    def torch_params(*shapes_and_values):
        return [torch.nn.Parameter(v if isinstance(v, torch.Tensor) else torch.randn(v) * 0.1)
                for v in shapes_and_values]

    def torch_step_of(params, forward):
        opt = torch.optim.Adam(params, lr=1e-3)

        def step():
            opt.zero_grad()
            (forward() * doutt).sum().backward()
            opt.step()
        return step

    if "lstm-rdrop" in names:
        cell = torch.nn.LSTMCell(I, H)

        def rdrop_forward():
            mask = torch.bernoulli(torch.full((N, H), 1 - P)) / (1 - P)   # one per sequence
            h, c, outs = torch.zeros(N, H), torch.zeros(N, H), []
            for t in range(T):
                h, c = cell(xt[t], (h * mask, c))
                outs.append(h)
            return torch.stack(outs)
        rows.append((f"LSTM, recurrent_dropout={P} (nn.LSTMCell loop)",
                     (elman_step_of(elman.LSTM(I, H, recurrent_dropout=P, seed=0)),
                      torch_step_of(list(cell.parameters()), rdrop_forward))))
    if "ln-lstm" in names:
        G = 4 * H
        ps = torch_params((G, I), (G, H), torch.ones(G), torch.zeros(G), torch.ones(G),
                          torch.zeros(G), torch.ones(H), torch.zeros(H))
        zeros = torch.zeros(N, H)
        rows.append(("LN-LSTM (TorchScript, custom_lstms.py)",
                     (elman_step_of(elman.LSTM(I, H, layer_norm=True, seed=0)),
                      torch_step_of(ps, lambda ps=ps: loops[0](xt, zeros, zeros, *ps)[0]))))
    if "ln-gru" in names:
        G = 3 * H
        ps = torch_params((G, I), (G, H), torch.ones(G), torch.zeros(G), torch.ones(G),
                          torch.zeros(G), (G,), (G,))
        zeros = torch.zeros(N, H)
        rows.append(("LN-GRU (TorchScript, same style)",
                     (elman_step_of(elman.GRU(I, H, layer_norm=True, seed=0)),
                      torch_step_of(ps, lambda ps=ps: loops[1](xt, zeros, *ps)[0]))))
    if "lstm-zoneout" in names:
        cell = torch.nn.LSTMCell(I, H)

        def zoneout_forward():
            h, c, outs = torch.zeros(N, H), torch.zeros(N, H), []
            for t in range(T):
                h_new, c_new = cell(xt[t], (h, c))
                a = torch.bernoulli(torch.full((N, H), ZONEOUT))      # fresh every step
                b = torch.bernoulli(torch.full((N, H), ZONEOUT))
                h = a * h + (1 - a) * h_new
                c = b * c + (1 - b) * c_new
                outs.append(h)
            return torch.stack(outs)
        rows.append((f"LSTM, zoneout={ZONEOUT} (nn.LSTMCell loop)",
                     (elman_step_of(elman.LSTM(I, H, zoneout=ZONEOUT, seed=0)),
                      torch_step_of(list(cell.parameters()), zoneout_forward))))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per timed repeat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settle", type=float, default=0.15,
                    help="seconds of pause before each timed repeat, so that the threads the "
                         "other side left spinning go idle first (as in bench_rnn.py)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", default=",".join(ROWS),
                    help=f"comma-separated rows to run, of {', '.join(ROWS)}")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    ap.add_argument("--keep-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (else: re-run without them)")
    args = ap.parse_args(argv)
    if args.settle < 0:
        ap.error(f"--settle must be >= 0, got {args.settle}")
    if args.quick:
        args.settle = min(args.settle, 0.01)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = sorted(set(args.rows) - set(ROWS))
    if unknown:
        ap.error(f"--rows: unknown {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    if not args.keep_env and (os.environ.get("OPENBLAS_CORETYPE")
                              or os.environ.get("OPENBLAS_L2_SIZE")):
        # they slow NumPy's OpenBLAS on this machine; both go together (see bench_rnn.py)
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    import numpy as np
    import threadpoolctl
    import torch

    import elman
    torch.set_num_threads(args.threads)
    elman.set_num_threads(args.threads)
    blas = ", ".join(f"{i['internal_api']} {i.get('architecture') or ''}".strip()
                     for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
    rows = []
    for N, T, I, H in (QUICK if args.quick else CONFIGS):
        for name, (elman_step, torch_step) in _rows(np, torch, elman, N, T, I, H, args.rows):
            times = {"elman": [], "torch": []}
            for _ in range(3):      # warm-up: compilation, allocations, and TorchScript's
                for fn in (elman_step, torch_step):   # profiling runs before it optimises
                    fn()
            for _ in range(2 if args.quick else args.repeats):
                for who, fn in (("elman", elman_step), ("torch", torch_step)):
                    time.sleep(args.settle)
                    count, start = 0, time.perf_counter()
                    while True:
                        fn()
                        count += 1
                        elapsed = time.perf_counter() - start
                        if elapsed >= (0.01 if args.quick else args.min_time):
                            break
                    times[who].append(elapsed / count)
            e, t = statistics.median(times["elman"]), statistics.median(times["torch"])
            rows.append((name, (N, T, I, H), e * 1e3, t * 1e3, t / e))

    lines = [f"elman {elman.__version__} vs torch {torch.__version__}, float32, "
             f"{args.threads} threads, BLAS: {blas}; medians of "
             f"{2 if args.quick else args.repeats} alternating repeats, each after a "
             f"{args.settle:g} s pause, ms per training step",
             "", "| model (torch reference) | N, T, I, H | elman | torch | elman faster by |",
             "|---|---|--:|--:|--:|"]
    for name, cfg, e, t, ratio in rows:
        lines.append(f"| {name} | {', '.join(map(str, cfg))} | {e:.2f} | {t:.2f} | "
                     f"{ratio:.2f}x |")
    print("\n".join(lines))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
