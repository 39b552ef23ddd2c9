"""Graded spikes on Lava (opt-in): spike counts (SEW spike ADD) lowered to GradedVec populations
whose counts travel as graded messages (num_message_bits > 0) into the next synapse.
Float: spike for spike equal to the torch reference; fixed point: bit-exact with snncc's integer
reference; refusals (no flag, analog values even with the flag); the artifact, summary and CLI.
Each Lava run costs about a second (process spawn)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

import graphs
from lavatest import require_lava
from snncc.backends import torch_ref as torch_backend
from snncc.ir import serialize
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Dense, Flatten, Input, Neuron, Pool, Readout
from snncc.neuron import NeuronParams

lb, lf = require_lava()

LIF = NeuronParams("lif", tau=2.0, v_th=0.5)
IF = NeuronParams("if", v_th=1.0)


def sew2(rng, shape=(2, 6, 6), n_out=5, name="sew2"):
    """Two SEW blocks: add1 = sn2 + sn0 (counts 0..2) feeds a conv directly (lava Conv with graded
    input); add2 = sn4 + add1 (counts 0..3; add1 reaches it through graded relays) -> avg pool ->
    dense -> LIF."""
    c = shape[0]
    g = SpikeGraph(name, {"timesteps": 6})
    g.add("x", Input(shape))
    g.add("stem", graphs.conv(rng, c, 4), ["x"])
    g.add("sn0", Neuron(LIF), ["stem"])
    g.add("conv1", graphs.conv(rng, 4, 4), ["sn0"])
    g.add("sn1", Neuron(LIF), ["conv1"])
    g.add("conv2", graphs.conv(rng, 4, 4), ["sn1"])
    g.add("sn2", Neuron(LIF), ["conv2"])
    g.add("add1", Add(), ["sn2", "sn0"])
    g.add("conv3", graphs.conv(rng, 4, 4, gain=1.5), ["add1"])
    g.add("sn3", Neuron(LIF), ["conv3"])
    g.add("conv4", graphs.conv(rng, 4, 4), ["sn3"])
    g.add("sn4", Neuron(LIF), ["conv4"])
    g.add("add2", Add(), ["sn4", "add1"])
    g.add("pool", Pool("avg", (2, 2), (2, 2)), ["add2"])
    g.add("flat", Flatten(), ["pool"])
    h, w = shape[1] // 2, shape[2] // 2
    g.add("fc", Dense(rng.normal(0, 0.4, (n_out, 4 * h * w)), rng.normal(0.1, 0.05, n_out)), ["flat"])
    g.add("sn_out", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["sn_out"])
    return g


def doubled(rng):
    """sum = Add(a, a) feeds population b directly: every spike of a is a count of 2. With binary
    messages b would receive half its input, so this graph shows that the payload is used."""
    g = SpikeGraph("doubled", {"timesteps": 8})
    g.add("x", Input((6,)))
    g.add("fa", Dense(rng.normal(0.3, 0.5, (8, 6))), ["x"])
    g.add("a", Neuron(IF), ["fa"])
    g.add("sum", Add(), ["a", "a"])
    g.add("b", Neuron(NeuronParams("if", v_th=1.5)), ["sum"])
    g.add("out", Readout("count"), ["b"])
    return g


def _counts(ref, *pops):
    return sum(ref.trains[p].astype(np.int64) for p in pops)


def _assert_equal_trains(g, got, ref, label):
    assert set(got.trains) == set(ref.trains) == set(g.populations())
    for n in g.populations():
        assert got.trains[n].shape == ref.trains[n].shape
        assert np.array_equal(got.trains[n], ref.trains[n]), f"{label}: population {n} differs"
        count, rate = int(ref.trains[n].sum()), ref.trains[n].mean()
        assert count >= 3 and rate < 0.9, f"{label}: trivial firing ({count} spikes, rate {rate:.3f}) in {n}"
    assert np.array_equal(got.output, ref.output)
    for n, v in ref.activity.items():
        assert got.activity[n] == pytest.approx(v, rel=1e-9, abs=1e-9)


def test_float_sew_dense_equals_torch():
    """tests/graphs.residual('sew'): the spike ADD reaches a pool-folded Dense as graded messages."""
    rng = np.random.default_rng(1)
    g = graphs.residual(rng, "sew")
    plan = lb.lower(g, lb.Options(graded_spikes=True))
    assert plan.graded and plan.pops["add"].lava_type == "GradedVec" and plan.pops["add"].max_value == 2
    (edge,) = plan.graded_edges
    assert (edge.src, edge.dst, edge.kind, edge.bits) == ("add", "sn_out", "dense", 2)
    assert all(c.bits == 0 for c in plan.conns if c is not edge)     # spikes stay binary
    assert plan.pops["add"].depth == 3 and plan.pops["sn_out"].depth == 4
    x = rng.random((2, 2, 6, 6)) * 4.0
    ref = torch_backend.run(g, x, 6, record=True)
    got = lb.run(g, x, 6, record=True, options=lb.Options(graded_spikes=True))
    _assert_equal_trains(g, got, ref, "sew")
    assert (_counts(ref, "sn2", "sn0") == 2).sum() > 0, "no count of 2 reached the synapse"


def test_float_two_sew_blocks_conv_and_graded_relays():
    rng = np.random.default_rng(2)
    g = sew2(rng)
    plan = lb.lower(g, lb.Options(graded_spikes=True))
    kinds = {(c.src, c.dst): (c.kind, c.bits) for c in plan.graded_edges}
    assert kinds[("add1", "sn3")] == ("conv", 2)                    # COUNT into a lava Conv
    assert plan.pops["add2"].max_value == 3 and kinds[("add2", "sn_out")] == ("dense", 2)
    relays = [p for p in plan.pops.values() if p.role == "graded-relay"]
    assert [p.name for p in relays] == ["add1~relay1", "add1~relay2"]
    assert all(p.lava_type == "GradedVec" and p.max_value == 2 for p in relays)
    x = rng.random((2, 2, 6, 6)) * 4.0
    ref = torch_backend.run(g, x, 6, record=True)
    got = lb.run((g, plan), x, 6, record=True)
    _assert_equal_trains(g, got, ref, "sew2")
    assert (_counts(ref, "sn2", "sn0") == 2).sum() > 0
    assert (_counts(ref, "sn4", "sn2", "sn0") >= 2).sum() > 0


def test_graded_payload_is_used():
    """Same plan with the messages forced binary (num_message_bits = 0) no longer matches."""
    rng = np.random.default_rng(0)
    g = doubled(rng)
    x = rng.random((2, 6)) * 1.5
    ref = torch_backend.run(g, x, 8, record=True)
    plan = lb.lower(g, lb.Options(graded_spikes=True))
    (edge,) = plan.graded_edges
    assert edge.role == "identity" and edge.bits == 2 and plan.pops["sum"].max_value == 2
    got = lb.run((g, plan), x, 8, record=True)
    _assert_equal_trains(g, got, ref, "doubled")
    edge.bits = 0
    binary = lb.run((g, plan), x, 8, record=True)
    assert np.array_equal(binary.trains["a"], ref.trains["a"])
    assert binary.trains["b"].sum() < ref.trains["b"].sum()


def test_fixed_point_graded_bit_exact():
    rng = np.random.default_rng(2)
    g = sew2(rng)
    x = rng.random((2, 2, 6, 6)) * 4.0
    plan = lf.lower_fixed(g, input_bound=4.0, graded=True)
    assert plan.precision == "fixed_pt" and plan.graded and len(plan.graded_edges) == 5
    assert plan.fixed.pops["add1"].role == "graded"
    ref = lf.run_integer(g, x, 6, plan=plan, record=True)
    got = lb.run((g, plan), x, 6, record=True)
    flt = torch_backend.run(g, x, 6, record=True)
    for n in g.populations():
        assert np.array_equal(got.trains[n], ref.trains[n]), f"population {n} differs"
        assert ref.trains[n].sum() >= 3
        assert (ref.trains[n] == flt.trains[n]).mean() > 0.85
    assert np.array_equal(got.output, ref.output)
    # the worst-case input bound counts graded sources at their largest count
    fx = plan.fixed
    e, k = fx.conns["fc->sn_out"].weight_exp, fx.pops["sn_out"].k
    assert e <= 7 and k is not None


def test_refusals():
    from snncc.passes.validate import check_fully_spiking
    rng = np.random.default_rng(0)
    sew = graphs.residual(rng, "sew")
    first = str(check_fully_spiking(sew).violations[0])
    for fixed in (False, True):
        with pytest.raises(lb.LoweringError, match="not fully spiking") as ei:
            lb.lower(sew, lb.Options(fixed_point=fixed))
        msg = str(ei.value)
        assert first in msg and "graded" in msg and "--graded-spikes" in msg and "\n" not in msg
    with pytest.raises(lb.LoweringError, match=r"Add \(node 'sum'\).*--graded-spikes"):
        lb.lower(doubled(rng))
    ms = graphs.residual(rng, "ms")
    for fixed in (False, True):
        with pytest.raises(lb.LoweringError, match="even with graded spikes") as ei:
            lb.lower(ms, lb.Options(fixed_point=fixed, graded_spikes=True))
        msg = str(ei.value)
        assert "analog" in msg and "'add'" in msg and "\n" not in msg and "--graded-spikes" not in msg
    # without the flag an analog graph gets no hint at graded spikes (they would not help)
    with pytest.raises(lb.LoweringError) as ei:
        lb.lower(ms)
    assert "graded" not in str(ei.value)
    # a COUNT that feeds itself back has no bound
    g = SpikeGraph("loop")
    g.add("x", Input((4,)))
    g.add("fa", Dense(rng.normal(size=(4, 4))), ["x"])
    g.add("a", Neuron(LIF), ["fa"])
    g.add("acc", Add(), ["a", "a"])
    g.connect("acc", "acc", 1)
    g.add("b", Neuron(LIF), ["acc"])
    g.add("out", Readout("count"), ["b"])
    with pytest.raises(lb.LoweringError, match=r"'acc'.*depends on itself"):
        lb.lower(g, lb.Options(graded_spikes=True))


def test_artifact_and_summary_say_graded(tmp_path):
    rng = np.random.default_rng(2)
    g = sew2(rng)
    out = lb.compile_graph(g, tmp_path / "art", lb.Options(graded_spikes=True))
    g2, cfg = lb.load_artifact(out)
    assert cfg["graded_spikes"] is True
    edges = {(e["src"], e["dst"]): e for e in cfg["graded_edges"]}
    assert edges[("add1", "sn3")]["num_message_bits"] == 2 and edges[("add2", "sn_out")]["max_value"] == 3
    procs = {p["name"]: p for p in cfg["processes"]}
    assert procs["add1"]["type"] == "GradedVec" and procs["add1~relay1"]["role"] == "graded-relay"
    assert procs["conv3->sn3"]["num_message_bits"] == 2 and procs["conv1->sn1"]["num_message_bits"] == 0
    text = (out / "summary.txt").read_text()
    assert "graded spikes" in text and "graded messages (COUNT edges lowered as graded spikes): 5" in text
    assert "add1 -> conv3->sn3 -> sn3: spike counts 0..2, num_message_bits=2" in text
    assert lb.lower(g2, lb.Options(graded_spikes=True)).to_json() == json.loads(json.dumps(lb.lower(g, lb.Options(graded_spikes=True)).to_json()))
    # a fully spiking graph with the flag: nothing is graded, and the summary says so
    plain = lb.lower(graphs.mlp(rng), lb.Options(graded_spikes=True))
    assert plain.graded and not plain.graded_edges and "nothing needed them" in plain.summary()
    assert lb.lower(graphs.mlp(rng)).to_json()["graded_spikes"] is False


# -- CLI --------------------------------------------------------------------------------------
def invoke(*args):
    from snncc.cli import main
    return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def sew_digits(tmp_path_factory):
    g = sew2(np.random.default_rng(9), shape=(1, 8, 8), n_out=10, name="sew2-digits")
    g.metadata.update(dataset="digits", timesteps=4)
    path = tmp_path_factory.mktemp("graded") / "sew.snn.onnx"
    serialize.save(g, path)
    return path


def test_cli_compile_graded_then_run_equals_torch(sew_digits, tmp_path):
    out = tmp_path / "art"
    res = invoke("compile", sew_digits, "--target", "lava", "--graded-spikes", "-o", out)
    assert res.exit_code == 0, res.stderr
    assert "(graded spikes)" in res.stdout and "graded messages (COUNT edges" in res.stdout
    res = invoke("run", out, "--limit", 4, "--json")
    assert res.exit_code == 0, res.stderr
    lava = json.loads(res.stdout)
    assert lava["backend"] == "lava" and lava["graded_spikes"] is True and lava["precision"] == "floating_pt"
    ref = json.loads(invoke("run", sew_digits, "--backend", "torch", "--limit", 4, "--json").stdout)
    assert lava["layers"] == ref["layers"] and lava["accuracy"] == ref["accuracy"]
    assert all(layer["spikes"] > 0 for layer in ref["layers"])


def test_cli_refusals(sew_digits, tmp_path):
    before = set(tmp_path.iterdir())
    res = invoke("compile", sew_digits, "--target", "lava", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "spike ADD" in res.stderr and "--graded-spikes" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    res = invoke("run", sew_digits, "--backend", "torch", "--graded-spikes", "--limit", 2)
    assert res.exit_code == 2 and "--graded-spikes applies to --backend lava" in res.stderr
    res = invoke("compile", sew_digits, "--target", "numba", "--graded-spikes", "-o", tmp_path / "out")
    assert res.exit_code == 2 and "--graded-spikes applies to --target lava" in res.stderr
    ms = tmp_path / "ms.snn.onnx"
    serialize.save(graphs.residual(np.random.default_rng(0), "ms"), ms)
    before.add(ms)
    for args in (["compile", ms, "--target", "lava", "--graded-spikes", "-o", tmp_path / "out"],
                 ["run", ms, "--backend", "lava", "--graded-spikes", "--dataset", "digits"]):
        res = invoke(*args)
        assert res.exit_code == 2, res.stderr
        assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
        assert "even with graded spikes" in res.stderr and "'add'" in res.stderr
    assert set(tmp_path.iterdir()) == before       # nothing (half-)written
