"""The compile-time benchmark (snncc.bench.compile_bench) at reduced width: it runs, the graph
has the Spike-ResNet-18 structure, and every conv that reads spikes becomes a lava Conv (no
unrolled matrices). No timing assertion (shared 2-core machine)."""
import numpy as np
import pytest

from snncc.bench import compile_bench as cb
from snncc.ir.ops import Conv

pytest.importorskip("snncc.backends.lava")


def test_graph_structure_full_width():
    g = cb.build_spike_resnet18()
    types = g.infer()
    assert 11.0e6 < sum(np.size(g.op(n).weight) for n in g.synapses()) < 11.3e6
    assert sum(isinstance(g.op(n), Conv) for n in g.synapses()) == 20   # stem + 16 + 3 downsample
    assert types["l4.1.sn2"].shape == (512, 4, 4) and types["fc.sn"].shape == (10,)
    assert [p.src for p in g.inputs("l2.0.sn2")] == ["l2.0.conv2", "l2.0.down"]
    assert [p.src for p in g.inputs("l1.1.sn2")] == ["l1.1.conv2", "l1.0.sn2"]  # identity shortcut


def test_bench_compile_reduced_width(tmp_path):
    r = cb.bench_compile(width=0.125, fixed_point=True, out_dir=tmp_path)
    for k in ("build_graph_s", "lower_s", "lower_fixed_s", "compile_graph_s"):
        assert r[k] > 0
    assert r["conv_synapses"] == 20 and r["conv_synapses_as_lava_conv"] == 19   # stem: host-side bias
    assert r["lava_processes"]["conv"] == 19 and r["lava_processes"]["LIF"] >= 34
    assert r["largest_dense_entries"] == 10 * 64 * 16     # only the FC, with the 4x4 avg pool folded in
    assert r["max_depth"] == 17 and r["artifact_bytes"] > 0
    assert all(e >= 0 for e in r["fixed_conv_weight_exp"])
    assert not list(tmp_path.iterdir())                                         # temp dir cleaned up


def test_sim_bench_lava_ir_keys():
    """(Kept here because tests/test_sim_bench.py belongs to another owner.) The compiled-from-IR
    Lava path of the sim benchmark at tiny T: new keys present, old keys unchanged, float
    Lava spikes equal numba's."""
    pytest.importorskip("lava")
    from snncc.bench.sim_bench import run_bench
    r = run_bench(timesteps=8, with_lava=False, repeats=1, with_lava_ir=True, lava_ir_timesteps=4)
    assert r["lava_ms_per_step"] is None and r["timesteps"] == 8          # existing keys unchanged
    assert r["lava_ir_timesteps"] == 4 and r["lava_ir_steps_per_sample"] == 7
    for tag in ("float", "fixed"):
        for k in ("ms_per_step", "readback_s", "first_sample_s", "lower_s"):
            assert r[f"lava_ir_{tag}_{k}"] > 0, (tag, k)
    assert r["lava_ir_float_spikes_equal_numba"] is True
    assert r["numba_vs_lava_ir_float"] > 0 and "T=4" in r["lava_ir_note"]
