"""Side-by-side timing of one LIF MLP (784-1024-1024-10, batch 1) on three simulators:

(a) snncc's event-driven Numba simulator (the real ``snncc.sims.numba_sim`` plan, JIT
    compile excluded by a warm-up run),
(b) a time-stepped PyTorch loop: a float32 ``torch.matmul`` per layer per step with the
    same neuron update (``snncc.neuron.step``), as a dense GPU-style code would run on CPU,
(c) Lava's CPU float simulator (``snncc.bench.lava_mlp``).

Run ``python -m snncc.bench.sim_bench``.
"""
from __future__ import annotations

import os
import statistics
import time

import numpy as np
import torch

from snncc import neuron as nrn
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Dense, Input, Neuron, Readout
from snncc.sims import numba_sim

SIZES = (784, 1024, 1024, 10)
PARAMS = nrn.NeuronParams("lif", tau=2.0, v_th=1.0, v_reset=0.0, reset="hard")
# Weight gain per layer on top of N(0, 1/sqrt(fan_in)): chosen so that with ~15% input
# spikes the hidden layers fire at roughly 10% (zero-mean weights alone barely reach
# threshold through the tau=2 leak). The measured rates are reported with the timings.
GAINS = (4.0, 4.5, 5.0)


def build_mlp(rng: np.random.Generator) -> tuple[SpikeGraph, list[np.ndarray]]:
    g = SpikeGraph("mlp-bench")
    src = g.add("x", Input((SIZES[0],), encoding="spike"))
    weights = []
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        # float32 values, as in any network trained in float32 (the simulator then streams
        # float32 weights; its float64 accumulation is unchanged)
        w = rng.normal(0.0, GAINS[i] / np.sqrt(n_in), (n_out, n_in)).astype(np.float32).astype(np.float64)
        weights.append(w)
        g.add(f"fc{i}", Dense(w), [src])
        src = g.add(f"lif{i}", Neuron(PARAMS), [f"fc{i}"])
    g.add("out", Readout("count"), [src])
    return g, weights


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _time_numba(graph, x, timesteps, repeats):
    plan = numba_sim.Plan(graph)
    t0 = time.perf_counter()
    plan.run(x, timesteps, record=True)  # JIT compile (or cache load) + warm buffers
    compile_s = time.perf_counter() - t0
    result = plan.run(x, timesteps, record=True)
    wall = _median_time(lambda: plan.run(x, timesteps), repeats)
    threads, numba_sim._THREADS = numba_sim._THREADS, 1
    try:
        wall_1 = _median_time(lambda: plan.run(x, timesteps), repeats)
    finally:
        numba_sim._THREADS = threads
    return result, wall, wall_1, compile_s


def torch_loop(weights, spikes: np.ndarray, record: bool = False):
    """Dense time-stepped baseline on spikes (T, n_in); with record, returns per-layer
    trains (T, n) (recording is left out of the timed runs, as it is for numba)."""
    ws = [torch.as_tensor(w.T.copy(), dtype=torch.float32) for w in weights]
    xs = torch.as_tensor(spikes, dtype=torch.float32)
    leaky, inv_tau, v_th, v_reset, v_rest, soft = PARAMS.scalars()
    vs = [torch.full((1, w.shape[1]), v_rest) for w in ws]
    trains = [torch.empty((xs.shape[0], w.shape[1])) for w in ws] if record else None
    with torch.no_grad():
        for t in range(xs.shape[0]):
            s = xs[t:t + 1]
            for i, w in enumerate(ws):
                s, vs[i] = nrn.step(vs[i], torch.matmul(s, w), leaky, inv_tau, v_th, v_reset, v_rest, soft)
                if record:
                    trains[i][t] = s[0]
    return [tr.numpy() for tr in trains] if record else None


def _time_torch(weights, spikes, repeats):
    default = torch.get_num_threads()
    out = {}
    try:
        for threads in (1, default):
            torch.set_num_threads(threads)
            torch_loop(weights, spikes[:5])  # warm-up
            out[threads] = _median_time(lambda: torch_loop(weights, spikes), repeats)
    finally:
        torch.set_num_threads(default)
    return out[1], out[default], default


def _time_lava(weights, spikes):
    """Lava LIF: u = u(1-du) + a; v = v(1-dv) + u. With du = 1 and dv = 1/tau this is
    snncc's LIF when the weights are scaled by 1/tau (same work; Lava's per-layer delay
    and '>' threshold mean its spikes are not compared, only its speed)."""
    from snncc.bench.lava_mlp import lava_ms_per_step

    inv_tau = 1.0 / PARAMS.tau
    return lava_ms_per_step([w * inv_tau for w in weights], spikes.T.astype(np.uint8), vth=PARAMS.v_th,
                            du=1.0, dv=inv_tau, steps=spikes.shape[0])


def run_bench(timesteps: int = 200, input_rate: float = 0.15, seed: int = 0,
              with_lava: bool = True, repeats: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    graph, weights = build_mlp(rng)
    spikes = (rng.random((timesteps, SIZES[0])) < input_rate).astype(np.float64)
    x = spikes[None]  # (B=1, T, 784)

    res, numba_s, numba_1, compile_s = _time_numba(graph, x, timesteps, repeats)
    torch_1, torch_s, threads = _time_torch(weights, spikes, max(1, repeats // 3))
    ref = torch_loop(weights, spikes, record=True)
    agree = all(np.array_equal(res.trains[f"lif{i}"][:, 0], ref[i]) for i in range(len(ref)))
    pre = [res.activity["x"]] + [res.activity[f"lif{i}"] for i in range(len(weights) - 1)]
    events = sum(n * w.shape[0] for n, w in zip(pre, weights))
    lava = _time_lava(weights, spikes) if with_lava else None

    numba_ms = numba_s * 1e3 / timesteps
    torch_ms = torch_s * 1e3 / timesteps
    lava_ms = lava["ms_per_step"] if lava else None
    return {
        "numba_ms_per_step": numba_ms,
        "torch_ms_per_step": torch_ms,
        "lava_ms_per_step": lava_ms,
        "numba_vs_torch": torch_ms / numba_ms,
        "numba_vs_lava": lava_ms / numba_ms if lava else None,
        "synaptic_events_per_s": events / numba_s,
        "synaptic_events": int(events),
        "timesteps": timesteps,
        "input_rate": float(spikes.mean()),
        "firing_rates": {f"lif{i}": float(res.trains[f"lif{i}"].mean()) for i in range(len(weights))},
        "spikes_agree_numba_vs_torch_loop": bool(agree),
        "torch_1thread_ms_per_step": torch_1 * 1e3 / timesteps,
        "torch_threads": threads,
        "numba_threads": numba_sim._THREADS,
        "numba_1thread_ms_per_step": numba_1 * 1e3 / timesteps,
        "numba_first_run_s": compile_s,
        "lava_compile_s": lava["compile_s"] if lava else None,
        "load_average_1min": os.getloadavg()[0],  # other processes share the cores
    }


if __name__ == "__main__":
    for k, v in run_bench().items():
        print(f"{k:>34}: {v}")
