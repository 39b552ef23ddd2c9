"""The `dense` backend (float32 multi-step torch, snncc/backends/dense_torch.py) behind the Backend seam:
its spikes against the float64 reference on small graphs, its refusals, and `snncc run` / `energy report`."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from graphs import LIF, cnn, mlp, residual, rnn

from snncc.agreement import compare_runs
from snncc.backends import torch_ref
from snncc.backends.base import LoweringError, UnsupportedOp
from snncc.cli import main
from snncc.ir import serialize
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Conv, Dense, Flatten, Input, Integrator, Neuron, Readout
from snncc.runtime import get_backend, lower


def _grouped(rng):
    """conv with groups 2 and dilation 2 (the dense rule must pass both to conv2d) -> LIF -> dense -> LIF."""
    g = SpikeGraph("grouped", {"timesteps": 5})
    g.add("x", Input((4, 7, 7)))
    g.add("c", Conv(rng.normal(0, 0.9, (6, 2, 3, 3)), rng.normal(0.1, 0.1, 6), (1, 1), (2, 2), (2, 2), 2), ["x"])
    g.add("s1", Neuron(LIF), ["c"])
    g.add("fl", Flatten(), ["s1"])
    g.add("fc", Dense(rng.normal(0, 0.2, (5, 6 * 7 * 7))), ["fl"])
    g.add("s2", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["s2"])
    return g


@pytest.mark.parametrize("name", ["mlp", "spike", "ms", "cnn-spike-input", "grouped"])
def test_dense_backend_spikes_equal_the_reference(rng, name):
    graphs = {"mlp": (lambda: mlp(rng), (3, 1, 8, 8)), "spike": (lambda: residual(rng, "spike"), (2, 2, 6, 6)),
              "ms": (lambda: residual(rng, "ms"), (2, 2, 6, 6)), "cnn-spike-input": (lambda: cnn(rng, "spike"), None),
              "grouped": (lambda: _grouped(rng), (3, 4, 7, 7))}
    build, shape = graphs[name]
    g = build()
    x = (rng.random((3, 5, 1, 8, 8)) < 0.4).astype(float) if shape is None else rng.random(shape) * 1.5
    prog = lower(g, "dense")
    assert prog.backend == "dense" and prog.plan is not None
    got = get_backend("dense").run(prog, x, 5, record=True)
    ref = torch_ref.run(g, x, 5, record=True)
    a = compare_runs(g, ref, got, names=("torch", "dense"))
    assert a.spikes_equal and sum(a.compared.values()) > 0
    fired = [t.mean() for t in ref.trains.values()]
    assert any(0 < f < 1 for f in fired), fired           # neither silent nor saturated: a real comparison
    np.testing.assert_allclose(got.output, ref.output, rtol=1e-5, atol=1e-5)
    for n in g.populations():                               # spike totals exactly (float64 sums of 0/1)
        assert got.activity[n] == ref.activity[n] == ref.trains[n].sum()


def test_dense_backend_refuses_by_node(rng):
    with pytest.raises(LoweringError, match=r"dense backend: node 'h' has a delayed input"):
        lower(rnn(rng), "dense")
    g = SpikeGraph("li", {"timesteps": 3})
    g.add("x", Input((4,)))
    g.add("fc", Dense(rng.normal(size=(3, 4))), ["x"])
    g.add("li", Integrator(LIF), ["fc"])
    g.add("out", Readout("mean"), ["li"])
    with pytest.raises(UnsupportedOp, match=r"dense backend has no rule for op Integrator .*\(node 'li'\)"):
        lower(g, "dense")
    h = mlp(rng)
    op = h.op("lif0")
    h.replace_op("lif0", Neuron(op.params, v_th=np.full(48, 0.5)))
    with pytest.raises(LoweringError, match=r"node 'lif0' has per-neuron or CUBA parameters"):
        lower(h, "dense")


def _invoke(*args):
    return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])


def test_cli_run_and_energy_report_with_dense(rng, tmp_path):
    model = tmp_path / "mlp.snn.onnx"
    serialize.save(mlp(rng), model)        # digits-shaped, metadata names the dataset and T
    runs = {}
    for backend in ("torch", "dense"):
        res = _invoke("run", model, "--backend", backend, "--limit", 60, "--json")
        assert res.exit_code == 0, res.stderr
        runs[backend] = json.loads(res.stdout)
    assert runs["dense"]["backend"] == "dense" and runs["dense"]["precision"] == "float32"
    assert runs["dense"]["layers"] == runs["torch"]["layers"] and runs["dense"]["accuracy"] == runs["torch"]["accuracy"]
    assert sum(layer["spikes"] for layer in runs["dense"]["layers"]) > 0
    res = _invoke("run", model, "--backend", "dense", "--limit", 60)
    assert res.exit_code == 0 and "backend dense [float32]: accuracy" in res.stdout
    assert "60/60" in res.stderr and "sample/s" in res.stderr
    # --compare: spikes equal entry by entry; the float32 analog sums are reported beyond float64's tolerance
    res = _invoke("run", model, "--backend", "dense", "--compare", "torch", "--limit", 60, "--json")
    agreement = json.loads(res.stdout)["agreement"]
    assert agreement["spikes_equal"] and agreement["predictions_differ"] == 0
    assert all(p["differing"] == 0 and p["compared"] > 0 for p in agreement["populations"].values())
    assert res.exit_code == (0 if agreement["agree"] else 1)
    if not agreement["agree"]:
        res = _invoke("run", model, "--backend", "dense", "--compare", "torch", "--limit", 60)
        assert "dense and torch DISAGREE" in res.stdout and "spikes: equal" in res.stdout
    reports = {}
    for backend in ("numba", "dense"):
        res = _invoke("energy", "report", model, "--backend", backend, "--limit", 60, "--json", tmp_path / f"{backend}.json")
        assert res.exit_code == 0, res.stderr
        reports[backend] = json.loads((tmp_path / f"{backend}.json").read_text())
    rates = [[layer["firing_rate"] for layer in reports[b]["layers"]] for b in ("numba", "dense")]
    assert rates[0] == rates[1] and reports["numba"]["total_energy_pj"] == reports["dense"]["total_energy_pj"]


def test_threads_option(rng, tmp_path):
    """--threads reaches the numba and dense Options (torch's is restored after the run); torch refuses it."""
    import torch
    from snncc.runtime import make_options
    assert make_options("dense", {"threads": 1}).threads == 1 and make_options("numba", {"threads": 1}).threads == 1
    before = torch.get_num_threads()
    prog = lower(mlp(rng), "dense", make_options("dense", {"threads": 1}))
    get_backend("dense").run(prog, rng.random((2, 1, 8, 8)), 3)
    assert torch.get_num_threads() == before
    model = tmp_path / "mlp.snn.onnx"
    serialize.save(mlp(rng), model)
    res = _invoke("run", model, "--backend", "dense", "--threads", 1, "--limit", 20, "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["threads"] == 1
    res = _invoke("run", model, "--backend", "torch", "--threads", 1, "--limit", 20)
    assert res.exit_code == 2 and "--threads applies to --backend numba or dense" in res.stderr
    res = _invoke("energy", "report", model, "--backend", "numba", "--threads", 1, "--limit", 20)
    assert res.exit_code == 0, res.stderr
