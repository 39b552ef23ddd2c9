"""Event-driven conv kernels against each other and against dense float32 torch, per layer shape (one thread).

    python scripts/conv_kernels.py choice
        scatter (conv_rows) vs gather (conv_events) per shape and input density: the ratio of their times
        (> 1: the gather is faster) and the kernel sims/numba_rules.py's conv_gather_wins picks (S or G);
        16 rows of binary input, best of 5.
    python scripts/conv_kernels.py roofline [DENSITY] [--json FILE]
        how far an exact (float64-accumulating) event-driven conv can go against dense float32 torch. For each
        3x3 conv shape of the bench matrix's Spike-ResNet-18 (width 1/2, 32x32 input), 32 rows (T 4 x 8 samples):
        torch = torch.nn.functional.conv2d in float32 on the dense input (what the dense baseline runs);
        kernel = the simulator's event conv (the better of scatter and gather);
        ideal = a bound for any float64 event kernel written in numba: weight rows (float32, in cache) added into
        one accumulator row four events per pass, with no conv geometry, compaction or output layout at all; its
        rate (float64 adds/s) times the layer's event work gives the least time such a kernel could take.
        Break-even density: where the event work (density x dense multiply-adds) at that rate takes as long as
        torch's dense conv.
"""
import json
import sys
import time

import numba
import numpy as np
import torch

from snncc.sims.numba_kernels import conv_events, conv_rows
from snncc.sims.numba_rules import _prep_conv, conv_gather_wins


@numba.njit(nogil=True)
def ideal_adds(w, acc, idx, reps):
    """acc += w[idx[q]] for every listed event, four events per pass over acc, ``reps`` times."""
    c = acc.size
    for _ in range(reps):
        q = 0
        while q + 4 <= idx.size:
            a, b, cc, d = w[idx[q]], w[idx[q + 1]], w[idx[q + 2]], w[idx[q + 3]]
            for j in range(c):
                acc[j] = acc[j] + a[j] + b[j] + cc[j] + d[j]
            q += 4
    return acc[0]


def best_ms(fn, reps=5):
    fn()
    fn()  # twice: torch builds its oneDNN primitive on the first calls of a shape
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def ideal_rate(c_out: int, field: int) -> float:
    """float64 adds per second of ideal_adds with weight rows of c_out float32 values, 72 events per pass."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((field, c_out)).astype(np.float32)
    idx = rng.integers(0, field, 72).astype(np.int64)
    acc = np.zeros(c_out)
    reps = max(1, int(1e8 / (72 * c_out)))
    ms = best_ms(lambda: ideal_adds(w, acc, idx, reps), 3)
    return 72 * c_out * reps / (ms * 1e-3)


class _Op:
    def __init__(self, w, stride, pad):
        self.weight, self.bias, self.groups = w, np.zeros(w.shape[0]), 1
        self.stride, self.padding, self.dilation = (stride, stride), (pad, pad), (1, 1)


class _Type:
    def __init__(self, shape):
        self.shape = shape


def roofline(argv):
    args = [a for a in argv if not a.startswith("--")]
    rho = float(args[0]) if args else 0.25
    out_json = argv[argv.index("--json") + 1] if "--json" in argv else None
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = 32
    shapes = [(32, 32, 32, 1), (32, 64, 32, 2), (64, 64, 16, 1), (64, 128, 16, 2), (128, 128, 8, 1),
              (128, 256, 8, 2), (256, 256, 4, 1)]
    results = []
    print(f"input density {rho}, {rows} rows, one thread; ms per {rows} rows")
    print(f"{'c_in':>5} {'c_out':>5} {'hw':>3} {'s':>2} {'torch f32':>10} {'kernel':>8} {'ideal':>8} "
          f"{'ideal G/s':>10} {'torch GMAC/s':>12} {'break-even: ideal':>18} {'kernel':>7}")
    for c_in, c_out, hw, stride in shapes:
        ho = hw // stride
        w32 = (rng.standard_normal((c_out, c_in, 3, 3)) * 0.1).astype(np.float32)
        d = _prep_conv(_Op(w32.astype(np.float64), stride, 1), _Type((c_in, hw, hw)), _Type((c_out, ho, ho)))
        x = (rng.random((rows, c_in * hw * hw)) < rho).astype(np.float64)
        o = np.empty((rows, c_out * ho * ho))
        t_gather = best_ms(lambda: conv_events(0, rows, x, d["w_g"], d["bias"], o, *d["dims"], d["c_grp"]))
        t_scatter = best_ms(lambda: conv_rows(0, rows, x, d["w_f"], d["bias"], o, *d["dims"], d["c_grp"]))
        xt = torch.from_numpy(x.astype(np.float32).reshape(rows, c_in, hw, hw))
        wt = torch.from_numpy(w32)
        t_torch = best_ms(lambda: torch.nn.functional.conv2d(xt, wt, stride=stride, padding=1))
        macs = rows * c_out * ho * ho * c_in * 9
        rate = ideal_rate(c_out, c_in * 9)
        t_ideal = rho * macs / rate * 1e3
        t_kernel = min(t_gather, t_scatter)
        torch_rate = macs / (t_torch * 1e-3)
        row = {"c_in": c_in, "c_out": c_out, "hw": hw, "stride": stride, "torch_f32_ms": t_torch,
               "kernel_ms": t_kernel, "gather_ms": t_gather, "scatter_ms": t_scatter, "ideal_ms": t_ideal,
               "ideal_adds_per_s": rate, "torch_macs_per_s": torch_rate,
               "break_even_ideal": rate / torch_rate, "break_even_kernel": rho * t_torch / t_kernel}
        results.append(row)
        print(f"{c_in:5d} {c_out:5d} {hw:3d} {stride:2d} {t_torch:10.2f} {t_kernel:8.2f} {t_ideal:8.2f} "
              f"{rate / 1e9:10.1f} {torch_rate / 1e9:12.1f} {row['break_even_ideal']:18.2f} "
              f"{row['break_even_kernel']:7.2f}", flush=True)
    total = {k: sum(r[k] for r in results) for k in ("torch_f32_ms", "kernel_ms", "ideal_ms")}
    print("all shapes: torch {torch_f32_ms:.2f} ms, kernel {kernel_ms:.2f} ms, ideal {ideal_ms:.2f} ms".format(**total))
    if out_json:
        with open(out_json, "w") as f:
            json.dump({"density": rho, "rows": rows, "shapes": results, "total": total}, f, indent=1)


def choice(argv):
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = 16
    densities = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
    print("c_in c_out  hw  k  s | scatter/gather time at density " + " ".join(f"{r:>8}" for r in densities))
    for c_in, c_out, hw, k, stride in [(16, 16, 32, 3, 1), (32, 32, 32, 3, 1), (64, 64, 16, 3, 1),
                                       (128, 128, 8, 3, 1), (256, 256, 4, 3, 1), (512, 512, 4, 3, 1),
                                       (32, 64, 32, 3, 2), (64, 128, 16, 3, 2), (128, 256, 8, 3, 2),
                                       (32, 64, 32, 1, 2), (64, 128, 16, 1, 2), (128, 256, 8, 1, 2),
                                       (64, 64, 16, 1, 1)]:
        w = (rng.standard_normal((c_out, c_in, k, k)) * 0.1).astype(np.float32).astype(np.float64)
        ho = hw // stride
        d = _prep_conv(_Op(w, stride, k // 2), _Type((c_in, hw, hw)), _Type((c_out, ho, ho)))
        cells = []
        for rho in densities:
            x = (rng.random((rows, c_in * hw * hw)) < rho).astype(np.float64)
            o = np.empty((rows, c_out * ho * ho))
            t_g = best_ms(lambda: conv_events(0, rows, x, d["w_g"], d["bias"], o, *d["dims"], d["c_grp"]))
            t_s = best_ms(lambda: conv_rows(0, rows, x, d["w_f"], d["bias"], o, *d["dims"], d["c_grp"]))
            cells.append(f"{t_s / t_g:6.2f} {'G' if conv_gather_wins(rho, d) else 'S'}")
        print(f"{c_in:4d} {c_out:5d} {hw:3d} {k:2d} {stride:2d} | " + " ".join(cells), flush=True)



if __name__ == "__main__":
    {"roofline": roofline, "choice": choice}[sys.argv[1]](sys.argv[2:])
