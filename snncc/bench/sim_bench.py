"""Side-by-side timing of one LIF MLP (784-1024-1024-10, batch 1) on three simulators:

(a) snncc's event-driven Numba simulator (the real ``snncc.sims.numba_sim`` plan, JIT
    compile excluded by a warm-up run),
(b) a time-stepped PyTorch loop: a float32 ``torch.matmul`` per layer per step with the
    same neuron update (``snncc.neuron.step``), as a dense GPU-style code would run on CPU,
(c) Lava's CPU float simulator (``snncc.bench.lava_mlp``: hand-built processes),
(d) with ``with_lava_ir=True``: the same graph compiled from the IR by
    ``snncc.backends.lava`` and run with ``snncc.backends.lava.run``, float and bit-accurate
    fixed point (``lava_ir_*`` keys). ``run`` reports its phases separately; the per-step time
    is taken from a second, identical sample (compile, process spawn and the first sample
    excluded) and the sink read-back (lava 0.10's Var.get, slow) is reported on its own.
    Lava runs use ``lava_ir_timesteps`` (default 50) steps, fewer than the others' T, because
    the read-back grows with T; the per-step numbers are comparable, totals are not.

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


def _time_numba(graph, x, timesteps, repeats, threads=None):
    plan = numba_sim.Plan(graph, threads)
    t0 = time.perf_counter()
    plan.run(x, timesteps, record=True)  # JIT compile (or cache load) + warm buffers
    compile_s = time.perf_counter() - t0
    result = plan.run(x, timesteps, record=True)
    wall = _median_time(lambda: plan.run(x, timesteps), repeats)
    single = numba_sim.Plan(graph, threads=1)
    single.run(x, timesteps)  # warm buffers
    wall_1 = _median_time(lambda: single.run(x, timesteps), repeats)
    return result, wall, wall_1, compile_s, plan.threads


def torch_loop(weights, spikes: np.ndarray, record: bool = False):
    """Dense time-stepped baseline on spikes (T, n_in); with record, returns per-layer
    trains (T, n) (recording is left out of the timed runs, as it is for numba)."""
    ws = [torch.as_tensor(w.T.copy(), dtype=torch.float32) for w in weights]
    xs = torch.as_tensor(spikes, dtype=torch.float32)
    scalars = PARAMS.scalars()
    vs = [torch.full((1, w.shape[1]), PARAMS.v_rest) for w in ws]
    trains = [torch.empty((xs.shape[0], w.shape[1])) for w in ws] if record else None
    with torch.no_grad():
        for t in range(xs.shape[0]):
            s = xs[t:t + 1]
            for i, w in enumerate(ws):
                s, vs[i] = nrn.step(vs[i], torch.matmul(s, w), *scalars)
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


def _time_lava_ir(graph, spikes: np.ndarray, numba_trains: dict, timesteps: int) -> dict:
    """The Lava backend's run on the IR graph, float and fixed point, batch 2 (the same sample
    twice: sample 2 is the steady-state timing). Spikes are compared with the numba simulator's."""
    from snncc.backends import lava as lb

    x = np.repeat(spikes[None, :timesteps], 2, axis=0)          # (B=2, T, 784)
    out = {"lava_ir_timesteps": timesteps}
    for tag, fixed in (("float", False), ("fixed", True)):
        t0 = time.perf_counter()
        plan = lb.lower(graph, lb.Options(fixed_point=fixed))
        lower_s = time.perf_counter() - t0
        timing: dict = {}
        t0 = time.perf_counter()
        res = lb.run((graph, plan), x, timesteps, record=True, timing=timing)
        total_s = time.perf_counter() - t0
        steps = timing["steps_per_sample"]
        agree = [float(np.mean(res.trains[n][:, b] == numba_trains[n][:timesteps, 0]))
                 for n in numba_trains for b in range(2)]
        out |= {
            f"lava_ir_{tag}_ms_per_step": timing["later_samples_run_s"] * 1e3 / steps,
            f"lava_ir_{tag}_lower_s": lower_s,
            f"lava_ir_{tag}_first_sample_s": timing["first_sample_s"],   # compile + spawn + 1 sample
            f"lava_ir_{tag}_reset_s": timing["reset_s"],
            f"lava_ir_{tag}_readback_s": timing["readback_s"],
            f"lava_ir_{tag}_stop_s": timing["stop_s"],
            f"lava_ir_{tag}_total_s": total_s,
            f"lava_ir_{tag}_spike_agreement_vs_numba": min(agree),
        }
        out["lava_ir_steps_per_sample"] = steps
    out["lava_ir_float_spikes_equal_numba"] = out["lava_ir_float_spike_agreement_vs_numba"] == 1.0
    out["lava_ir_note"] = (f"lava run, T={timesteps} (+{out['lava_ir_steps_per_sample'] - timesteps} "
                           "alignment steps) per sample, ms/step from the 2nd of 2 identical samples; "
                           "compile/spawn, read-back (Var.get) and stop reported separately; fixed point "
                           "uses 8-bit weights, so its spikes are not expected to equal numba's")
    return out


def run_bench(timesteps: int = 200, input_rate: float = 0.15, seed: int = 0,
              with_lava: bool = True, repeats: int = 10, with_lava_ir: bool = False,
              lava_ir_timesteps: int = 50, numba_threads: int | None = None) -> dict:
    """``numba_threads``: the simulator's worker threads (default: numba's thread count); the
    single-thread figure always uses a second plan with threads=1."""
    rng = np.random.default_rng(seed)
    graph, weights = build_mlp(rng)
    spikes = (rng.random((timesteps, SIZES[0])) < input_rate).astype(np.float64)
    x = spikes[None]  # (B=1, T, 784)

    res, numba_s, numba_1, compile_s, numba_threads = _time_numba(graph, x, timesteps, repeats, numba_threads)
    torch_1, torch_s, threads = _time_torch(weights, spikes, max(1, repeats // 3))
    ref = torch_loop(weights, spikes, record=True)
    agree = all(np.array_equal(res.trains[f"lif{i}"][:, 0], ref[i]) for i in range(len(ref)))
    pre = [res.activity["x"]] + [res.activity[f"lif{i}"] for i in range(len(weights) - 1)]
    events = sum(n * w.shape[0] for n, w in zip(pre, weights))
    lava = _time_lava(weights, spikes) if with_lava else None
    lava_ir = (_time_lava_ir(graph, spikes, {f"lif{i}": res.trains[f"lif{i}"] for i in range(len(weights))},
                             min(lava_ir_timesteps, timesteps)) if with_lava_ir else {})

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
        "numba_threads": numba_threads,
        "numba_1thread_ms_per_step": numba_1 * 1e3 / timesteps,
        "numba_first_run_s": compile_s,
        "lava_compile_s": lava["compile_s"] if lava else None,
        "load_average_1min": os.getloadavg()[0],  # other processes share the cores
    } | lava_ir | ({"numba_vs_lava_ir_float": lava_ir["lava_ir_float_ms_per_step"] / numba_ms,
                    "numba_vs_lava_ir_fixed": lava_ir["lava_ir_fixed_ms_per_step"] / numba_ms}
                   if lava_ir else {})


if __name__ == "__main__":
    for k, v in run_bench(with_lava_ir=True).items():
        print(f"{k:>34}: {v}")
