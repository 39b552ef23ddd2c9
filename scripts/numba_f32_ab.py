"""A/B of the numba simulator's float32 path (sims/numba_f32.py) in one process: on vs off (off: the float64
kernels only, as before the float32 path), on bench-matrix cells, interleaved, minimum of N runs, 1 and 2 threads.

    python scripts/numba_f32_ab.py REPEATS MODEL:INPUT:RATE:T:B ...
    environment: F32MIN (conv float32 product crossover density, default the rules' CONV_F32_MIN_DENSITY),
                 TORCH32=0 (the float32 conv product by im2col + numpy sgemm instead of torch's direct conv)

Prints one JSON line per cell: ms/sample [2 threads, 1 thread] per side, the speedup (best off / best on), whether
the two sides' spike trains are equal, dense float32 torch (DenseTorch, best of 1 and 2 torch threads, timed after
the numba sides) and each numba side's ratio to it (dense ms / numba ms), and the float32 path's checked / recomputed neuron runs."""
import sys, time, os, json, numpy as np
from snncc.bench.sim_matrix import base_graph, sample, calibrate
from snncc.sims import numba_sim, numba_rules
from snncc.backends import torch_ref
from snncc.backends.dense_torch import DenseTorch
import torch
orig_wins, orig_min = numba_rules.f32_product_wins, numba_rules.CONV_F32_MIN_DENSITY


def mode(on):
    numba_rules.f32_product_wins = orig_wins if on else (lambda *a: False)
    numba_rules.CONV_F32_MIN_DENSITY = float(os.environ.get("F32MIN", orig_min)) if on else 2.0
    numba_rules.CONV_F32_TORCH = os.environ.get("TORCH32", "1") == "1"
reps = int(sys.argv[1])
for cell in sys.argv[2:]:
    model, enc, rate, T, B = cell.split(":"); rate, T, B = float(rate), int(T), int(B)
    rng = np.random.default_rng(0)
    g0 = base_graph(model, enc); x = sample(g0, B, T, rate, rng); g = calibrate(g0, x[:4], T, rate)
    plans = {th: numba_sim.Plan(g, threads=th) for th in (1, 2)}
    trains = {}
    for on in (False, True):
        mode(on); plans[2].float32_stats(reset=True)
        trains[on] = plans[2].run(x, T, record=True).trains
    st = plans[2].float32_stats()
    same = all(np.array_equal(trains[0][p], trains[1][p]) for p in trains[0])
    ts = {(on, th): [] for on in (False, True) for th in (1, 2)}
    for i in range(reps):
        for on in ((False, True) if i % 2 == 0 else (True, False)):
            for th in (1, 2):
                mode(on); t0 = time.perf_counter(); plans[th].run(x, T); ts[(on, th)].append(time.perf_counter() - t0)
    dense, dts = DenseTorch(g), {1: [], 2: []}
    dense.run(x, T)
    for i in range(reps):
        for th in (1, 2):
            torch.set_num_threads(th); t0 = time.perf_counter(); dense.run(x, T); dts[th].append(time.perf_counter() - t0)
    torch.set_num_threads(2)
    dense_ms = min(min(v) for v in dts.values()) * 1e3 / B
    best = {k: min(v) * 1e3 / B for k, v in ts.items()}
    off, on_ = min(best[(False, 1)], best[(False, 2)]), min(best[(True, 1)], best[(True, 2)])
    rate_got = np.mean([t.mean() for t in trains[1].values()])
    print(json.dumps({"cell": cell, "rate": round(float(rate_got), 3),
                      "f64_ms": [round(best[(False, 2)], 2), round(best[(False, 1)], 2)],
                      "f32_ms": [round(best[(True, 2)], 2), round(best[(True, 1)], 2)], "speedup": round(off / on_, 3),
                      "dense_ms": round(dense_ms, 2), "f64_vs_dense": round(dense_ms / off, 3),
                      "f32_vs_dense": round(dense_ms / on_, 3),
                      "spikes_equal_f64_path": same, "float32_neurons": st, "load": os.getloadavg()[0]}), flush=True)
