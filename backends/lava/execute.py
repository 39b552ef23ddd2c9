"""Run a lowered graph on Lava's CPU simulator (float, or bit-accurate fixed_pt when the plan
carries fixed-point parameters). Samples run one after another from zero state in one
runtime; the runtime is always stopped (try/finally)."""
from __future__ import annotations

import time

import numpy as np

from snncc.backends.lava.build import build, run_cfg, set_dyn, zero_buffer
from snncc.backends.lava.host import dyn_value, host_inputs, realign, replay
from snncc.backends.lava.plan import LavaPlan
from snncc.compat.lava import import_lava
from snncc.ir.graph import SpikeGraph
from snncc.runtime import RunResult, check_input

__all__ = ["run_plan"]


def run_plan(graph: SpikeGraph, plan: LavaPlan, x, timesteps: int, record: bool = False,
             timing: dict | None = None) -> RunResult:
    """Run ``plan`` (lowered from ``graph``) on a batch. ``timing``: filled with the phases'
    wall times (first sample, later samples, resets, read-back, stop)."""
    x = check_input(graph, x, timesteps)
    L = import_lava()
    direct, static = host_inputs(graph, plan, x)
    batch = x.shape[0]
    steps = plan.steps_per_sample(timesteps)
    procs, dense, sinks = build(L, plan, x, batch, steps, timesteps)
    for d in plan.dyns:  # sample 0's values before compilation
        set_dyn(plan, procs, dense, d, dyn_value(d, static, 0), 0, init=True)
    anchor = next(iter(procs.values()))
    cfg = run_cfg(L, plan)
    zero = plan.params.dtype
    raw = {}
    try:
        t0 = time.perf_counter()
        run_s = reset_s = 0.0
        for b in range(batch):
            if b:
                tr = time.perf_counter()
                for p in plan.pops.values():
                    procs[p.name].v.set(np.zeros(p.size, zero))
                    if not p.graded:   # GradedVec: v only (zeroed every step anyway)
                        procs[p.name].u.set(np.zeros(p.size, zero))
                for c in plan.conns:
                    zero_buffer(c, dense[c.name], zero)
                for d in plan.dyns:
                    set_dyn(plan, procs, dense, d, dyn_value(d, static, b), b)
                reset_s += time.perf_counter() - tr
            t1 = time.perf_counter()
            anchor.run(condition=L.RunSteps(steps), run_cfg=cfg)
            t2 = time.perf_counter()
            if b:
                run_s += t2 - t1
            else:
                first_s = t2 - t0
        t3 = time.perf_counter()
        raw = {name: s.data.get() for name, s in sinks.items()}
        readback_s = time.perf_counter() - t3
    finally:
        t4 = time.perf_counter()
        anchor.stop()
        stop_s = time.perf_counter() - t4
    if timing is not None:
        timing.update(first_sample_s=first_s, later_samples_run_s=run_s, steps_per_sample=steps,
                      reset_s=reset_s, readback_s=readback_s, stop_s=stop_s)
    trains = realign(plan, raw, graph, timesteps, batch, steps)
    activity, output = replay(graph, x, trains, timesteps, direct)
    return RunResult(output=output, timesteps=timesteps, batch=batch, activity=activity,
                     trains=trains if record else {})
