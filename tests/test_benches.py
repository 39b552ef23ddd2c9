"""Benchmark harnesses run (tiny sizes) and report consistent keys; no timing asserts."""
from snncc.bench.mskd_bench import bench_mskd


def test_mskd_bench_reports_time_and_memory_for_each_method():
    res = bench_mskd(width=0.0625, timesteps=1, batch_size=4, steps=1, input_shape=(1, 28, 28))
    for m in ("direct", "kd", "mskd"):
        assert res[f"{m}_ms_per_step"] > 0 and res[f"{m}_peak_mb"] > res[f"{m}_saved_activation_mb"] > 0
    # MSKD adds heads and the reconstruction module: more parameters than the shared student
    assert res["mskd_parameters"] > res["kd_parameters"] == res["direct_parameters"]
    assert res["mskd_vs_kd_memory"] > 1.0
