"""Lava lowering: spike-for-spike conformance with the torch reference (float), refusals,
and the compile artifact. Each Lava run costs about a second (process spawn)."""
import json

import numpy as np
import pytest

import graphs
from lavatest import require_lava
from snncc.backends import torch_ref as torch_backend
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Dense, Input, Neuron, Readout
from snncc.neuron import NeuronParams

lb, _ = require_lava()
from snncc.compat.lava import import_lava  # noqa: E402  (after the skip check)

LIF_HARD = NeuronParams("lif", tau=2.0, v_th=0.5)
IF_HARD = NeuronParams("if", v_th=1.0)


def mlp_if(rng):
    g = graphs.mlp(rng)
    h = SpikeGraph("mlp-if", g.metadata)
    for n in g.order():
        op = g.op(n)
        h.add(n, Neuron(IF_HARD) if isinstance(op, Neuron) else op, g.inputs(n))
    return h


cnn = graphs.cnn
rnn_hard = graphs.rnn_hard


def spike_residual(rng):
    """graphs.residual('spike'): an identity shortcut that needs relay alignment."""
    return graphs.residual(rng, "spike")


def _inputs(rng, g, batch, T, gain=1.5):
    (inp,) = g.input_nodes
    shape = g.type_of(inp).shape
    if g.op(inp).encoding == "spike":
        return (rng.random((batch, T, *shape)) < 0.3).astype(np.float64)
    return rng.random((batch, *shape)) * gain


CASES = {
    "mlp-lif": (graphs.mlp, 3, 6, 1.5),
    "mlp-if": (mlp_if, 2, 6, 1.5),
    "cnn": (cnn, 2, 6, 1.5),
    "cnn-spike-input": (lambda r: cnn(r, "spike"), 2, 6, 1.5),
    "rnn-hard": (rnn_hard, 2, 8, 1.5),
    "spike-residual": (spike_residual, 3, 6, 4.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_float_conformance(case):
    rng = np.random.default_rng(1)
    build, batch, T, gain = CASES[case]
    g = build(rng)
    x = _inputs(rng, g, batch, T, gain)
    ref = torch_backend.run(g, x, T, record=True)
    got = lb.run(g, x, T, record=True)
    assert set(got.trains) == set(ref.trains) == set(g.populations())
    for n in g.populations():
        assert got.trains[n].dtype == np.uint8 and got.trains[n].shape == ref.trains[n].shape
        assert np.array_equal(got.trains[n], ref.trains[n]), f"{case}: population {n} differs"
        rate, count = ref.trains[n].mean(), int(ref.trains[n].sum())
        assert count >= 3 and rate < 0.9, f"{case}: trivial firing ({count} spikes, rate {rate:.3f}) in {n}"
    rates = [ref.trains[n].mean() for n in g.populations()]
    assert np.mean(rates) > 0.05, f"{case}: mean firing rate {np.mean(rates):.3f} too low"
    assert np.array_equal(got.output, ref.output)
    assert got.output.shape == ref.output.shape
    for n in g.populations():
        assert got.activity[n] == ref.activity[n]
    for n, v in ref.activity.items():
        assert got.activity[n] == pytest.approx(v, rel=1e-9, abs=1e-9)
    assert np.array_equal(got.predictions(g), ref.predictions(g))


def test_plan_alignment_and_params():
    rng = np.random.default_rng(0)
    plan = lb.lower(spike_residual(rng))
    pops = plan.pops
    assert pops["sn0"].depth == 0 and pops["sn1"].depth == 1 and pops["sn2"].depth == 2
    assert "sn0~relay1" in pops  # shortcut delayed by one relay to meet conv2's hop
    assert pops["sn0"].dv == 0.5 and pops["sn0"].du == 1.0
    assert pops["sn0"].vth == np.nextafter(0.5, -np.inf)
    plan = lb.lower(cnn(rng))
    assert plan.pops["mp"].role == "or" and plan.pops["mp"].depth == 1
    assert plan.pops["s2"].depth == 2 and plan.pops["s3"].depth == 3
    assert plan.pops["s1"].vth == np.nextafter(0.875, -np.inf)
    plan = lb.lower(rnn_hard(rng))
    (rec,) = [c for c in plan.conns if c.role == "synapse"]
    assert rec.src == rec.dst == "h" and rec.delay == 1 and rec.hops == 1
    assert plan.pops["h"].dv == 0.0


def test_conv_matrix_matches_torch():
    import torch
    import torch.nn.functional as F
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 2, 3, 2))
    x = rng.normal(size=(2, 5, 7))
    for stride, pad in [((1, 1), (1, 1)), ((2, 1), (0, 1))]:
        want = F.conv2d(torch.tensor(x[None]), torch.tensor(w), stride=stride, padding=pad).numpy().ravel()
        got = lb.conv_matrix(w, x.shape, stride, pad) @ x.ravel()
        np.testing.assert_allclose(got, want, atol=1e-12)


def test_refuses_soft_reset():
    g = graphs.rnn(np.random.default_rng(0))
    with pytest.raises(lb.LoweringError, match=r"'h'.*soft reset"):
        lb.lower(g)


@pytest.mark.parametrize("style", ["sew", "ms"])
def test_refuses_hybrid_graphs(style):
    from snncc.passes.validate import check_fully_spiking
    g = graphs.residual(np.random.default_rng(0), style)
    first = str(check_fully_spiking(g).violations[0])
    with pytest.raises(lb.LoweringError, match="not fully spiking") as ei:
        lb.lower(g)
    assert first in str(ei.value) and "\n" not in str(ei.value)


def test_op_without_rule_names_class_and_node():
    rng = np.random.default_rng(0)
    g = SpikeGraph("add")
    g.add("x", Input((4,)))
    g.add("fc", Dense(rng.normal(size=(4, 4))), ["x"])
    g.add("a", Neuron(LIF_HARD), ["fc"])
    g.add("sum", Add(), ["a", "a"])
    g.add("b", Neuron(LIF_HARD), ["sum"])
    g.add("out", Readout("count"), ["b"])
    with pytest.raises(lb.LoweringError, match=r"Add.*'sum'"):
        lb.lower(g)


def test_fixed_point_plan():
    rng = np.random.default_rng(0)
    g = graphs.mlp(rng)
    assert lb.lower(g, lb.Options(fixed_point=True)).precision == "fixed_pt"


def test_compile_artifact_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    g = cnn(rng)
    out = tmp_path / "art"
    lb.compile_graph(g, out)
    assert sorted(p.name for p in out.iterdir()) == [".snncc-output.json",  # snncc.fileio's marker
                                                     "graph.snn.onnx", "lava.json", "summary.txt"]
    lb.compile_graph(g, out)  # overwrite in place
    assert not [p for p in tmp_path.iterdir() if p.name != "art"]  # no temp leftovers
    g2, cfg = lb.load_artifact(out)
    assert g2.order() == g.order()
    assert cfg["precision"] == "floating_pt" and cfg["max_depth"] == 3
    names = {p["name"]: p for p in cfg["processes"]}
    assert names["s3"]["alignment_offset"] == 3 and names["mp"]["role"] == "or"
    assert "alignment" in (out / "summary.txt").read_text()
    # the reloaded graph lowers to the same program
    assert lb.lower(g2).to_json() == json.loads(json.dumps(lb.lower(g).to_json()))


def test_load_artifact_errors(tmp_path):
    with pytest.raises(lb.LoweringError, match="not a compiled") as ei:
        lb.load_artifact(tmp_path / "nope")
    assert "\n" not in str(ei.value)
    d = tmp_path / "bad"
    lb.compile_graph(graphs.mlp(np.random.default_rng(0)), d)
    (d / "lava.json").write_text("{not json")
    with pytest.raises(lb.LoweringError, match="corrupt"):
        lb.load_artifact(d)
    lb.compile_graph(graphs.mlp(np.random.default_rng(0)), d)
    (d / "graph.snn.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(lb.LoweringError) as ei:
        lb.load_artifact(d)
    assert "\n" not in str(ei.value)
    (d / "graph.snn.onnx").unlink()
    with pytest.raises(lb.LoweringError, match="missing graph.snn.onnx"):
        lb.load_artifact(d)
    with pytest.raises(lb.LoweringError, match="soft reset"):
        lb.compile_graph(graphs.rnn(np.random.default_rng(0)), tmp_path / "rnn")
    assert not (tmp_path / "rnn").exists()


def test_runtime_stopped_on_error(monkeypatch):
    """A failure after compilation still stops the runtime (no leaked Lava processes)."""
    import multiprocessing
    L = import_lava()
    calls = []
    real_stop = L.LIF.stop

    def stop(self):
        calls.append(self.name)
        return real_stop(self)

    monkeypatch.setattr(L.LIF, "stop", stop)
    g = graphs.mlp(np.random.default_rng(0))
    x = np.random.default_rng(0).random((2, 1, 8, 8))
    from snncc.backends.lava import execute
    real_dyn = execute.dyn_value

    def boom(d, static, b):
        if b == 1:
            raise RuntimeError("boom")
        return real_dyn(d, static, b)

    monkeypatch.setattr(execute, "dyn_value", boom)
    with pytest.raises(RuntimeError, match="boom"):
        lb.run(g, x, 4)
    assert calls, "runtime was not stopped"
    assert not [p for p in multiprocessing.active_children() if p.is_alive()]


def test_refuses_unrealisable_recurrent_delay():
    """A cycle through two Dense hops with total delay 1 would need a negative Lava delay."""
    rng = np.random.default_rng(0)
    g = SpikeGraph("loop")
    g.add("x", Input((3,)))
    g.add("ih", Dense(rng.normal(size=(4, 3))), ["x"])
    g.add("a", Neuron(LIF_HARD), ["ih"])
    g.add("ab", Dense(rng.normal(size=(4, 4))), ["a"])
    g.add("b", Neuron(LIF_HARD), ["ab"])
    g.add("ba", Dense(rng.normal(size=(4, 4))), ["b"])
    g.connect("ba", "a", 1)
    g.add("out", Readout("count"), ["b"])
    with pytest.raises(lb.LoweringError, match=r"'ba' -> 'a'.*cannot be realised"):
        lb.lower(g)


def test_direct_input_into_deeper_population():
    """A direct-input current into a depth-1 population is fed by a per-sample clock Dense."""
    rng = np.random.default_rng(3)
    g = SpikeGraph("skip-in")
    g.add("x", Input((6,)))
    g.add("fa", Dense(rng.normal(0, 1.0, (8, 6)), rng.normal(0, 0.1, 8)), ["x"])
    g.add("a", Neuron(LIF_HARD), ["fa"])
    g.add("fb", Dense(rng.normal(0, 0.8, (5, 6))), ["x"])
    g.add("ab", Dense(rng.normal(0, 1.0, (5, 8)), rng.normal(0, 0.1, 5)), ["a"])
    g.add("b", Neuron(LIF_HARD), ["ab", "fb"])
    g.add("out", Readout("count"), ["b"])
    plan = lb.lower(g)
    assert [(d.target, d.var) for d in plan.dyns] == [("a", "bias_mant"), ("b.bias@1", "weights")]
    x = rng.random((2, 6)) * 1.5
    ref = torch_backend.run(g, x, 6, record=True)
    got = lb.run(g, x, 6, record=True)
    for n in ("a", "b"):
        assert np.array_equal(got.trains[n], ref.trains[n]) and ref.trains[n].sum() >= 3
