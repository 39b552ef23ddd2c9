"""The workload matrix of `snncc bench sim --matrix`: its dense float32 baseline, its rate calibration,
one real cell and the CLI (tiny cells; no timing assertions)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from graphs import mlp, residual

from snncc.agreement import compare_runs
from snncc.backends import torch_ref
from snncc.backends.dense_torch import DenseTorch
from snncc.bench.sim_matrix import base_graph, calibrate, run_matrix, sample
from snncc.cli import main


@pytest.mark.parametrize("name", ["mlp", "spike"])
@pytest.mark.parametrize("per_step", [False, True])
def test_dense_baseline_equals_the_reference(rng, name, per_step):
    """All T*B rows per synapse at once (or one step at a time), float32: the reference's spikes."""
    g = mlp(rng) if name == "mlp" else residual(rng, "spike")
    x = rng.random((3, 1, 8, 8)) if name == "mlp" else rng.random((2, 2, 6, 6))
    ref = torch_ref.run(g, x, 6, record=True)
    got = DenseTorch(g, per_step=per_step).run(x, 6, record=True)
    a = compare_runs(g, ref, got, names=("reference", "dense"))
    assert a.spikes_equal and sum(a.compared.values()) > 0
    assert any(t.any() for t in ref.trains.values())
    np.testing.assert_allclose(got.output, ref.output, rtol=1e-5, atol=1e-5)


def test_dense_baseline_refuses_what_it_does_not_model(rng):
    from graphs import rnn
    with pytest.raises(ValueError, match="node 'h' has a delayed input"):
        DenseTorch(rnn(rng))


@pytest.mark.parametrize("encoding", ["direct", "spike"])
def test_calibration_sets_the_firing_rate(encoding):
    """Every population of the calibrated MLP fires near the target, measured by the reference."""
    rng = np.random.default_rng(0)
    g = base_graph("mlp", encoding)
    tuned = calibrate(g, sample(g, 4, 8, 0.1, rng), 8, 0.1)
    res = torch_ref.run(tuned, sample(tuned, 4, 8, 0.1, rng), 8, record=True)
    rates = {p: float(t.mean()) for p, t in res.trains.items()}
    assert all(0.05 <= r <= 0.2 for p, r in rates.items() if p != "lif2"), rates  # lif2: 10 neurons
    for n in tuned.synapses():  # weights remain float32 values
        w = tuned.op(n).weight
        assert np.array_equal(w.astype(np.float32).astype(np.float64), w)


def test_one_cell_checks_agreement_and_times_every_side():
    res = run_matrix(models=("mlp",), batches=(1,), timesteps=(3,), inputs=("spike",), rates=(0.1,), repeats=2)
    (cell,) = res["cells"]
    assert set(cell["seconds"]) == {"numba", "numba_1thread", "dense", "dense_1thread", "per_step"}
    best = {k: min(cell["seconds"][k]["min"], cell["seconds"][f"{k}_1thread"]["min"]) for k in ("numba", "dense")}
    assert cell["numba_vs_dense"] == pytest.approx(best["dense"] / best["numba"])
    assert all(v["min"] > 0 for v in cell["seconds"].values())
    assert cell["agreement"]["dense"]["spikes_equal"] and cell["agreement"]["per_step"]["spikes_equal"]
    assert cell["agreement"]["dense"]["compared_spike_entries"] == 3 * (1024 + 1024 + 10)
    assert 0.02 < cell["firing_rate"] < 0.3 and cell["dense_events_per_s"] > 0
    assert res["min_numba_vs_dense"] == cell["numba_vs_dense"] > 0


def test_cli_matrix_json_and_bad_selections():
    runner = CliRunner(mix_stderr=False)
    res = runner.invoke(main, ["bench", "sim", "--matrix", "--models", "mlp", "--batches", "2", "--steps", "2",
                               "--inputs", "direct", "--rates", "0.25", "--repeats", "1", "--no-lava", "--json"])
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["selection"] == {"models": ["mlp"], "batches": [2], "timesteps": [2], "inputs": ["direct"],
                                "rates": [0.25]}
    assert len(out["cells"]) == 1 and out["command"].startswith("snncc bench sim --matrix")
    assert "numba/dense" in res.stderr  # per-cell progress lines
    for args, msg in ((["--rates", "1.5"], "comma-separated list"), (["--models", "vgg"], "choose from"),
                      (["--quick", "--full"], "alternatives")):
        res = runner.invoke(main, ["bench", "sim", "--matrix", *args])
        assert res.exit_code == 2 and msg in res.stderr and "Traceback" not in res.stderr


def test_a_differing_side_is_judged_by_the_reference(rng):
    """A baseline with one spike flipped: the cell says so, and the float64 reference says numba is right."""
    from snncc.sims import numba_sim
    from snncc.bench.sim_matrix import time_cell
    g = mlp(rng)
    x = rng.random((2, 1, 8, 8))

    class Flipped(DenseTorch):
        def run(self, x, timesteps, record=False):
            res = super().run(x, timesteps, record)
            if record:
                res.trains["lif0"][1, 0, 3] ^= 1
            return res

    cell = time_cell(g, (numba_sim.Plan(g), numba_sim.Plan(g, threads=1)), Flipped(g), x, 4, repeats=1)
    assert cell["agreement"]["dense"]["differing_spike_entries"] == 1
    assert cell["agreement"]["reference"]["spikes_equal"]
    assert cell["agreement"]["dense"]["vs_reference"]["differing_spike_entries"] == 1
