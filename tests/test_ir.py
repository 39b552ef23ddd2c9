"""Spike-graph IR: type inference, ONNX round trips, and refusal of bad files."""
import numpy as np
import onnx
import pytest
from graphs import mlp, residual, rnn

from snncc.backends import torch_ref as torch_backend
from snncc.ir import serialize
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Dense, Flatten, Input, Neuron, Pool, Readout
from snncc.ir.serialize import SerializeError
from snncc.ir.types import GraphError, Kind


def test_kinds_follow_ops(rng):
    g = residual(rng, "sew")
    t = g.infer()
    assert t["x"].kind is Kind.ANALOG and t["stem"].kind is Kind.ANALOG
    assert t["sn0"].kind is Kind.SPIKE and t["add"].kind is Kind.COUNT
    assert t["pool"].kind is Kind.ANALOG and t["pool"].shape == (4, 3, 3)
    assert t["flat"].shape == (36,) and t["out"].kind is Kind.COUNT
    g = residual(rng, "ms")
    assert g.type_of("add").kind is Kind.ANALOG


def test_sum_and_max_pool_kinds():
    g = SpikeGraph()
    g.add("x", Input((1, 4, 4), encoding="spike"))
    g.add("mx", Pool("max", (2, 2), (2, 2)), ["x"])
    g.add("sm", Pool("sum", (2, 2), (2, 2)), ["x"])
    g.add("f", Flatten(), ["sm"])
    g.add("out", Readout(), ["mx"])
    t = g.infer()
    assert t["mx"].kind is Kind.SPIKE and t["sm"].kind is Kind.COUNT and t["mx"].shape == (1, 2, 2)


@pytest.mark.parametrize("make", [mlp, rnn, lambda r: residual(r, "spike"), lambda r: residual(r, "sew"),
                                  lambda r: residual(r, "ms")])
def test_onnx_round_trip_preserves_graph_and_behaviour(make, rng, tmp_path):
    g = make(rng)
    path = tmp_path / "m.snn.onnx"
    serialize.save(g, path)
    onnx.checker.check_model(onnx.load(path), full_check=True)
    g2 = serialize.load(path)
    assert g2.order() == g.order() and g2.metadata == g.metadata
    assert [g2.inputs(n) for n in g2.order()] == [g.inputs(n) for n in g.order()]
    assert g2.infer() == g.infer()
    for n in g.order():
        assert type(g2.op(n)) is type(g.op(n))
        if isinstance(g.op(n), Neuron):
            assert g2.op(n).params == g.op(n).params
    shape = g.type_of(g.input_nodes[0]).shape
    x = rng.random((3, *shape))
    a, b = torch_backend.run(g, x, 5, record=True), torch_backend.run(g2, x, 5, record=True)
    np.testing.assert_array_equal(a.output, b.output)
    assert set(b.trains) == set(g.populations())
    assert all(np.array_equal(a.trains[n], b.trains[n]) for n in a.trains)


def test_float_parameters_survive_exactly(tmp_path):
    from snncc.neuron import NeuronParams
    g = SpikeGraph()
    g.add("x", Input((3,)))
    p = NeuronParams("lif", tau=1.7, v_th=0.3, v_reset=-0.2)
    g.add("n", Neuron(p), ["x"])
    g.add("out", Readout(), ["n"])
    serialize.save(g, tmp_path / "p.snn.onnx")
    assert serialize.load(tmp_path / "p.snn.onnx").op("n").params == p


def test_recurrent_edge_is_delayed_and_acyclic_in_onnx(rng, tmp_path):
    g = rnn(rng)
    serialize.save(g, tmp_path / "r.snn.onnx")
    model = onnx.load(tmp_path / "r.snn.onnx")
    h = next(n for n in model.graph.node if n.name == "h")
    assert list(h.input) == ["ih"]  # the delayed input is an attribute, not an ONNX edge
    assert serialize.load(tmp_path / "r.snn.onnx").inputs("h")[1].delay == 1


def test_reloaded_graph_runs_identically(rng, tmp_path):
    g = mlp(rng)
    serialize.save(g, tmp_path / "m.snn.onnx")
    g2 = serialize.load(tmp_path / "m.snn.onnx")
    serialize.save(g2, tmp_path / "m2.snn.onnx")
    g3 = serialize.load(tmp_path / "m2.snn.onnx")
    x = rng.random((4, 1, 8, 8))
    r2, r3 = torch_backend.run(g2, x, 6, record=True), torch_backend.run(g3, x, 6, record=True)
    assert all(np.array_equal(r2.trains[n], r3.trains[n]) for n in r2.trains)


def test_shape_errors_name_the_node(rng):
    g = SpikeGraph()
    g.add("x", Input((10,)))
    g.add("fc", Dense(np.zeros((3, 11))), ["x"])
    g.add("out", Readout("mean"), ["fc"])
    with pytest.raises(GraphError, match="'fc': dense expects input shape \\[11\\], got \\[10\\]"):
        g.infer()


def test_structural_errors():
    g = SpikeGraph()
    g.add("x", Input((4,)))
    with pytest.raises(GraphError, match="duplicate node name 'x'"):
        g.add("x", Input((4,)))
    with pytest.raises(GraphError, match="unknown node 'nope'"):
        g.add("n", Neuron(), ["nope"])
    g2 = SpikeGraph()
    g2.add("x", Input((4,)))
    g2.add("a", Add(), ["x"])
    g2.add("out", Readout("mean"), ["a"])
    with pytest.raises(GraphError, match="Add takes 2..n inputs, got 1"):
        g2.infer()
    g3 = SpikeGraph()
    g3.add("x", Input((4,)))
    g3.add("n1", Neuron(), ["x"])
    g3.add("n2", Neuron(), ["n1"])
    g3.connect("n2", "n1", 0)
    with pytest.raises(GraphError, match="cycle without a delayed edge"):
        g3.order()


def _saved(rng, tmp_path):
    path = tmp_path / "m.snn.onnx"
    serialize.save(mlp(rng), path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(SerializeError, match="cannot read spike graph .*nothere"):
        serialize.load(tmp_path / "nothere.snn.onnx")


def test_truncated_file(rng, tmp_path):
    path = _saved(rng, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SerializeError, match="corrupt or truncated|invalid ONNX|not an snncc"):
        serialize.load(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "g.snn.onnx"
    path.write_bytes(b"\xff\x00 this is not protobuf \x13\x37" * 10)
    with pytest.raises(SerializeError):
        serialize.load(path)


def test_unknown_op_is_refused(rng, tmp_path):
    path = _saved(rng, tmp_path)
    model = onnx.load(path)
    model.graph.node[2].op_type = "Teleport"
    onnx.save(model, path)
    with pytest.raises(SerializeError, match="node 'fc0': unknown op ai.snncc::Teleport"):
        serialize.load(path)


def test_inconsistent_types_are_refused(rng, tmp_path):
    path = _saved(rng, tmp_path)
    model = onnx.load(path)
    w = next(t for t in model.graph.initializer if t.name == "fc1.weight")
    arr = onnx.numpy_helper.to_array(w)
    w.CopyFrom(onnx.numpy_helper.from_array(arr[:5], "fc1.weight"))  # 32 -> 5 output neurons
    onnx.save(model, path)
    with pytest.raises(SerializeError, match="node 'lif1'|node 'fc1'|node 'fc2'"):
        serialize.load(path)


def test_plain_onnx_model_is_not_a_spike_graph(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    model = onnx.helper.make_model(onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    onnx.save(model, tmp_path / "relu.onnx")
    with pytest.raises(SerializeError, match="not an snncc spike graph"):
        serialize.load(tmp_path / "relu.onnx")


def test_save_is_atomic(rng, tmp_path, monkeypatch):
    path = tmp_path / "m.snn.onnx"
    g = mlp(rng)
    g.add("bad", Dense(np.zeros((2, 3))), ["lif2"])  # shape error surfaces during save
    with pytest.raises(GraphError):
        serialize.save(g, path)
    assert list(tmp_path.iterdir()) == []


def _grouped_conv_graph(rng):
    from snncc.ir.ops import Conv
    g = SpikeGraph("gc")
    g.add("x", Input((4, 7, 7), encoding="spike"))
    g.add("c", Conv(rng.normal(0, 1, (6, 2, 3, 2)), rng.normal(0, 0.1, 6), (1, 2), (2, 1), (2, 3), 2), ["x"])
    g.add("n", Neuron(), ["c"])
    g.add("out", Readout(), ["n"])
    return g


def test_conv_dilation_and_groups_round_trip_and_old_files_default_to_one(rng, tmp_path):
    g = _grouped_conv_graph(rng)
    assert g.type_of("c").shape == (6, 7, 3)  # (7 + 4 - 2*2 - 1) // 1 + 1, (7 + 2 - 3*1 - 1) // 2 + 1
    path = tmp_path / "g.snn.onnx"
    serialize.save(g, path)
    op = serialize.load(path).op("c")
    assert (op.dilation, op.groups, op.stride, op.padding) == ((2, 3), 2, (1, 2), (2, 1))
    # a file from before the fields existed: a Conv node without dilation/groups attributes -> 1 and 1
    from snncc.ir.ops import Conv
    g.replace_op("c", Conv(g.op("c").weight[:, :, :2, :1].repeat(2, axis=1), None, (1, 1), (0, 0)))
    serialize.save(g, path)
    model = onnx.load(path)
    node = next(n for n in model.graph.node if n.name == "c")
    keep = [a for a in node.attribute if a.name not in ("dilation", "groups")]
    assert len(keep) == len(node.attribute) - 2
    del node.attribute[:]
    node.attribute.extend(keep)
    onnx.save(model, path)
    old = serialize.load(path)
    assert (old.op("c").dilation, old.op("c").groups, old.type_of("c").shape) == ((1, 1), 1, (6, 6, 7))


@pytest.mark.parametrize("name, value, message", [
    ("groups", 0, "attribute 'groups': value 0 outside 1..65536"),
    ("groups", 4, "groups=4 must be >= 1 and divide the 6 output channels"),
    ("groups", 3, r"conv expects input \[6, H, W\], got \[4, 7, 7\]"),
    ("dilation", [0, 1], r"attribute 'dilation': values \[0, 1\] outside 1..1024"),
])
def test_bad_conv_dilation_or_groups_are_refused(rng, tmp_path, name, value, message):
    path = tmp_path / "g.snn.onnx"
    serialize.save(_grouped_conv_graph(rng), path)
    model = onnx.load(path)
    node = next(n for n in model.graph.node if n.name == "c")
    attr = next(a for a in node.attribute if a.name == name)
    if name == "groups":
        attr.i = value
    else:
        del attr.ints[:]
        attr.ints.extend(value)
    onnx.save(model, path)
    with pytest.raises(SerializeError, match=message):
        serialize.load(path)


def test_multi_step_delays_survive_the_file_and_run_alike(rng, tmp_path):
    """Edges delayed by 3 (recurrent) and 5 (feed-forward) steps: written and read back, torch and numba
    give the same spikes, and a 5-step delay shifts the train by 5 steps exactly."""
    from snncc.ir.graph import MAX_DELAY, Port
    from snncc.neuron import NeuronParams
    from snncc.sims import numba_sim
    g = SpikeGraph("delays")
    g.add("x", Input((4,), encoding="spike"))
    g.add("fc", Dense(rng.normal(0.4, 0.8, (5, 4))), ["x"])
    g.add("n", Neuron(NeuronParams("if", v_th=1.0)), ["fc"])
    g.add("rec", Dense(rng.normal(0.0, 0.6, (5, 5))), ["n"])
    g.connect("rec", "n", 3)
    g.add("id", Dense(np.eye(5)), [Port("n", 5)])
    g.add("m", Neuron(NeuronParams("if", v_th=0.5)), ["id"])
    g.add("out", Readout(), ["m"])
    serialize.save(g, tmp_path / "d.snn.onnx")
    back = serialize.load(tmp_path / "d.snn.onnx")
    assert [(p.src, p.delay) for p in back.inputs("n")] == [("fc", 0), ("rec", 3)]
    x = (rng.random((2, 14, 4)) < 0.5).astype(np.float64)
    a = torch_backend.run(back, x, 14, record=True).trains
    b = numba_sim.run(back, x, 14, record=True).trains
    assert a["n"].sum() > 5
    for pop in ("n", "m"):
        np.testing.assert_array_equal(a[pop], b[pop])
    np.testing.assert_array_equal(a["m"][5:], a["n"][:-5])
    assert not a["m"][:5].any()
    with pytest.raises(GraphError, match=f"delay must be an int in 0..{MAX_DELAY} steps, got 1025"):
        g.connect("rec", "n", MAX_DELAY + 1)
