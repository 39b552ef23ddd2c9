"""Time a feed-forward LIF MLP on Lava's CPU float simulator (Loihi2SimCfg).

Network: RingBuffer source -> Dense(W0) -> LIF -> Dense(W1) -> LIF -> ... -> sink.
Built directly from lava.proc processes (no lava-dl); bias is 0 everywhere.

Lava float semantics this harness inherits (see tests/test_lava_compat.py):
  * every Dense adds a 1-step delay: spikes sent at step t reach the next LIF
    at step t+1 (Dense sends its buffered a_buff first, then accumulates);
  * LIF: u = u*(1-du) + a_in; v = v*(1-dv) + u + bias; spike if v > vth; v = 0.
So an input spike at step t can first affect layer k's output at step t+k.
"""
from __future__ import annotations

import time

import numpy as np

from snncc.compat.lava import import_lava

# Zero-input steps run first so that compilation, process spawn and channel
# set-up are timed separately. The network has no bias, so with no input
# every u, v and Dense buffer stays exactly 0 and the warm-up changes nothing.
_WARMUP = 1


def lava_ms_per_step(weights: list[np.ndarray], input_spikes: np.ndarray, vth: float,
                     du: float, dv: float, steps: int) -> dict:
    """Run the MLP for `steps` steps; return timing and last-layer spikes.

    weights[i] has shape (n_out, n_in) (Lava's Dense convention);
    input_spikes is binary with shape (n_in, steps).
    Returns {"ms_per_step", "compile_s", "run_s", "output_spikes" (n_out, steps) uint8}.
    """
    L = import_lava()
    x = np.asarray(input_spikes)
    if x.ndim != 2 or x.shape[1] != steps or not np.isin(x, (0, 1)).all():
        raise ValueError(f"input_spikes must be binary (n_in, {steps}), got {x.shape}")
    n = x.shape[0]
    for i, w in enumerate(weights):
        if w.ndim != 2 or w.shape[1] != n:
            raise ValueError(f"weights[{i}] has shape {w.shape}, expected (*, {n})")
        n = w.shape[0]

    total = _WARMUP + steps
    data = np.zeros((x.shape[0], total), dtype=float)
    data[:, _WARMUP:] = x
    src = L.SourceRingBuffer(data=data)
    port = src.s_out
    for w in weights:
        dense = L.Dense(weights=np.asarray(w, dtype=float))
        lif = L.LIF(shape=(w.shape[0],), du=du, dv=dv, vth=vth, bias_mant=0.0)
        port.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        port = lif.s_out
    sink = L.SinkRingBuffer(shape=(n,), buffer=total)
    port.connect(sink.a_in)

    cfg = L.Loihi2SimCfg(select_tag="floating_pt")
    try:
        t0 = time.perf_counter()
        src.run(condition=L.RunSteps(_WARMUP), run_cfg=cfg)  # compile + spawn + 1 step
        t1 = time.perf_counter()
        src.run(condition=L.RunSteps(steps), run_cfg=cfg)
        t2 = time.perf_counter()
        out = sink.data.get()[:, _WARMUP:]
    finally:
        src.stop()
    return {"ms_per_step": (t2 - t1) * 1e3 / steps, "compile_s": t1 - t0,
            "run_s": t2 - t1, "output_spikes": (out > 0).astype(np.uint8)}


if __name__ == "__main__":  # 784-1024-1024-10, ~15% input rate, T=200, batch 1
    rng = np.random.default_rng(0)
    sizes, T = [784, 1024, 1024, 10], 200
    ws = [rng.normal(0, 1.0 / np.sqrt(a), (b, a)) for a, b in zip(sizes[:-1], sizes[1:])]
    spikes = (rng.random((sizes[0], T)) < 0.15).astype(np.uint8)
    r = lava_ms_per_step(ws, spikes, vth=1.0, du=0.1, dv=0.1, steps=T)
    print(f"compile_s={r['compile_s']:.2f} ms_per_step={r['ms_per_step']:.3f} "
          f"out_spikes={int(r['output_spikes'].sum())}")
