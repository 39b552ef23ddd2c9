"""Time numba Plans on bench-matrix cells (no other side): min of N runs at 2 and 1 threads, ms/sample. Run it from
two checkouts alternately to compare code versions:  python scripts/numba_cells.py REPEATS MODEL:INPUT:RATE:T:B ..."""
import sys, time, json, os, numpy as np
from snncc.bench.sim_matrix import base_graph, sample, calibrate
from snncc.sims import numba_sim
reps = int(sys.argv[1]); out = {}
for cell in sys.argv[2:]:
    model, enc, rate, T, B = cell.split(":"); rate, T, B = float(rate), int(T), int(B)
    rng = np.random.default_rng(0)
    g0 = base_graph(model, enc); x = sample(g0, B, T, rate, rng); g = calibrate(g0, x[:4], T, rate)
    plans = {th: numba_sim.Plan(g, threads=th) for th in (1, 2)}
    for p in plans.values(): p.run(x, T)
    ts = {1: [], 2: []}
    for _ in range(reps):
        for th in (2, 1):
            t0 = time.perf_counter(); plans[th].run(x, T); ts[th].append(time.perf_counter() - t0)
    out[cell] = [round(min(ts[2]) * 1e3 / B, 3), round(min(ts[1]) * 1e3 / B, 3)]
print(json.dumps({"code": os.path.dirname(numba_sim.__file__), "ms_per_sample_2thr_1thr": out,
                  "load": os.getloadavg()[0]}))
