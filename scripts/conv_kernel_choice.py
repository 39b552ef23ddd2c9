"""Scatter (conv_rows) vs gather (conv_events) per conv shape and input density: the measurements behind
sims/numba_rules.py's conv_gather_wins. One thread, 16 rows of binary input, best of 5; prints the time ratio
scatter / gather (> 1: the gather is faster) and which kernel the rule picks (S or G).
Usage: python scripts/conv_kernel_choice.py"""
import time

import numba
import numpy as np

from snncc.sims.numba_kernels import conv_events, conv_rows
from snncc.sims.numba_rules import _prep_conv, conv_gather_wins


class _Op:
    def __init__(self, w, stride, pad):
        self.weight, self.bias, self.groups = w, np.zeros(w.shape[0]), 1
        self.stride, self.padding, self.dilation = (stride, stride), (pad, pad), (1, 1)


class _Type:
    def __init__(self, shape):
        self.shape = shape


def best_ms(fn, reps=5):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def main():
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
    main()
