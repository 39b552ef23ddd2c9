"""Smoke test of the simulator benchmark (tiny T, no Lava; no timing assertions)."""
import numpy as np

from snncc.bench.sim_bench import SIZES, build_mlp, run_bench, torch_loop
from snncc.sims import numba_sim

KEYS = {"numba_ms_per_step", "torch_ms_per_step", "lava_ms_per_step", "numba_vs_torch",
        "numba_vs_lava", "synaptic_events_per_s"}


def test_run_bench_keys_and_positive():
    r = run_bench(timesteps=8, with_lava=False, repeats=2)
    assert KEYS <= set(r)
    for k in KEYS - {"lava_ms_per_step", "numba_vs_lava"}:
        assert r[k] > 0, k
    assert r["lava_ms_per_step"] is None and r["numba_vs_lava"] is None
    assert r["timesteps"] == 8 and r["synaptic_events"] > 0
    assert set(r["firing_rates"]) == {"lif0", "lif1", "lif2"}
    assert r["spikes_agree_numba_vs_torch_loop"] is True   # the same spikes, not just a bool


def test_torch_loop_matches_simulator():
    """The float32 baseline computes the same network (it agrees with the float64
    simulator here, barring a float32 rounding flip near threshold)."""
    rng = np.random.default_rng(1)
    graph, weights = build_mlp(rng)
    spikes = (rng.random((6, SIZES[0])) < 0.15).astype(np.float64)
    res = numba_sim.run(graph, spikes[None], 6, record=True)
    trains = torch_loop(weights, spikes, record=True)
    for i, tr in enumerate(trains):
        assert tr.shape == (6, SIZES[i + 1])
        assert np.mean(tr != res.trains[f"lif{i}"][:, 0]) < 0.01
