"""The Numba simulator must reproduce the torch reference executor spike for spike.

Every graph is checked with np.array_equal on each population's spike train, on spike
and count activities and on count outputs; analog values (currents, 'mean' readouts)
are sums formed in a different order, so they agree to rounding (rtol 1e-12). Weights
are scaled so that every population fires at 5-40% (asserted), otherwise "equal
trains" would say little.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import graphs
from snncc.backends import torch_ref as torch_backend
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Neuron, Pool, Readout
from snncc.ir.graph import Port
from snncc.ir.types import Kind, TensorType
from snncc.neuron import NeuronParams
from snncc.sims import numba_kernels, numba_rules, numba_sim

LIF = NeuronParams("lif", tau=2.0, v_th=0.5)  # thresholds exact in float32: see _assert_same
IF_SOFT = NeuronParams("if", v_th=1.0, reset="soft")


def _assert_same(graph, x, steps, rates=True):
    """Run both backends; compare everything. Parameters whose float32 rounding differs
    (e.g. v_th=0.3) would not compare: the reference's `fire` returns torch's default
    float32 dtype, so its reset subtracts float32(v_th)."""
    got = numba_sim.run(graph, x, steps, record=True)
    ref = torch_backend.run(graph, x, steps, record=True)
    types = graph.infer()
    assert set(got.trains) == set(ref.trains) == set(graph.populations())
    for p in ref.trains:
        assert got.trains[p].dtype == np.uint8 and got.trains[p].shape == ref.trains[p].shape
        assert np.array_equal(got.trains[p], ref.trains[p]), p
        if rates:
            assert 0.05 <= ref.trains[p].mean() <= 0.40, (p, ref.trains[p].mean())
    for n, t in types.items():
        # Spike counts compare exactly. Analog sums, and the reference's inexact sum-pool
        # "counts" (see test_pool_kernel_matches_reference_bit_for_bit), to rounding.
        if t.kind is Kind.ANALOG or not float(ref.activity[n]).is_integer():
            assert np.isclose(got.activity[n], ref.activity[n], rtol=1e-12, atol=1e-9), n
        else:
            assert got.activity[n] == ref.activity[n], n
    assert got.output.shape == ref.output.shape and got.batch == ref.batch
    if types[graph.output_nodes[0]].kind is Kind.ANALOG:
        np.testing.assert_allclose(got.output, ref.output, rtol=1e-12, atol=1e-12)
    else:
        assert np.array_equal(got.output, ref.output)
    return ref


def _w(rng, shape, gain):
    fan_in = int(np.prod(shape[1:]))
    return rng.normal(0.0, gain / np.sqrt(fan_in), shape)


def _conv(rng, c_in, c_out, k, gain, stride=1, pad=1):
    return Conv(_w(rng, (c_out, c_in, k, k), gain), rng.normal(0, 0.1, c_out), (stride, stride), (pad, pad))


@pytest.fixture(params=["scatter", "gather", "dense"])
def kernel(request, monkeypatch):
    """Force every synapse onto one kernel (the cost model would mix them): each must
    reproduce the reference spike for spike on its own (gather: the event-driven conv that
    sums per output pixel; Dense layers have one event kernel)."""
    dense = request.param == "dense"
    monkeypatch.setattr(numba_rules, "dense_product_wins", lambda *shape: dense)
    monkeypatch.setattr(numba_rules, "CONV_MIN_DENSITY", 0.0 if dense else 2.0)
    monkeypatch.setattr(numba_rules, "conv_gather_wins", lambda rho, d: request.param == "gather")
    return request.param


def test_mlp_lif_hard_if_soft_bias(rng, kernel):
    g = SpikeGraph("mlp")
    g.add("x", Input((20,)))
    g.add("fc0", Dense(_w(rng, (40, 20), 2.0), rng.normal(0.2, 0.1, 40)), ["x"])
    g.add("n0", Neuron(LIF), ["fc0"])
    g.add("fc1", Dense(_w(rng, (30, 40), 3.0), rng.normal(0.1, 0.1, 30)), ["n0"])
    g.add("n1", Neuron(IF_SOFT), ["fc1"])
    g.add("fc2", Dense(_w(rng, (10, 30), 3.0), rng.normal(0.2, 0.1, 10)), ["n1"])
    g.add("n2", Neuron(NeuronParams("lif", tau=4.0, v_th=0.75, v_reset=-0.25)), ["fc2"])
    g.add("out", Readout("count"), ["n2"])
    _assert_same(g, rng.random((4, 20)), 12)


def test_cnn_conv_pools_flatten_dense(rng, kernel):
    g = SpikeGraph("cnn")
    g.add("x", Input((2, 16, 16)))
    g.add("c1", _conv(rng, 2, 4, 3, 3.0), ["x"])
    g.add("n1", Neuron(LIF), ["c1"])
    g.add("mp", Pool("max", (2, 2), (2, 2)), ["n1"])                    # spikes (4, 8, 8)
    g.add("c2", _conv(rng, 4, 6, 3, 4.0, stride=2, pad=1), ["mp"])      # (6, 4, 4)
    g.add("n2", Neuron(LIF), ["c2"])
    g.add("ap", Pool("avg", (3, 3), (1, 1), (1, 1)), ["n2"])            # analog, padding counted
    g.add("n3", Neuron(NeuronParams("lif", tau=2.0, v_th=0.125)), ["ap"])
    g.add("sp5", Pool("sum", (5, 5), (1, 1), (2, 2)), ["n3"])           # counts: n/25*25 != n
    g.add("c3", _conv(rng, 6, 4, 3, 1.0), ["sp5"])
    g.add("n4", Neuron(LIF), ["c3"])
    g.add("sp", Pool("sum", (2, 2), (2, 2)), ["n4"])                    # counts (4, 2, 2)
    g.add("mp3", Pool("max", (3, 3), (2, 2), (1, 1)), ["sp"])           # max padding ignored
    g.add("flat", Flatten(), ["mp3"])
    g.add("fc", Dense(_w(rng, (10, 4), 1.0), rng.normal(0.0, 0.1, 10)), ["flat"])
    g.add("n5", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["n5"])
    _assert_same(g, rng.random((3, 2, 16, 16)), 8)


def test_add_of_spikes_feeds_conv_and_spike_resnet(rng, kernel):
    g = SpikeGraph("sew-and-spike-resnet")
    g.add("x", Input((3, 8, 8)))
    g.add("ca", _conv(rng, 3, 4, 3, 3.0), ["x"])
    g.add("na", Neuron(LIF), ["ca"])
    g.add("cb", _conv(rng, 3, 4, 3, 3.0), ["x"])
    g.add("nb", Neuron(LIF), ["cb"])
    g.add("sum", Add(), ["na", "nb"])                                   # COUNT into a conv
    g.add("c2", _conv(rng, 4, 4, 3, 2.0), ["sum"])
    g.add("n2", Neuron(LIF), ["c2"])
    g.add("c3", _conv(rng, 4, 4, 3, 2.0), ["n2"])
    g.add("res", Neuron(LIF), ["c3", "na"])                             # current + identity spikes
    g.add("flat", Flatten(), ["res"])
    g.add("fc", Dense(_w(rng, (5, 256), 3.0), rng.normal(0.3, 0.1, 5)), ["flat"])
    g.add("n3", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["n3"])
    _assert_same(g, rng.random((2, 3, 8, 8)), 6)


def test_analog_mean_readout(rng, kernel):
    g = SpikeGraph("analog-out")
    g.add("x", Input((12,)))
    g.add("fc0", Dense(_w(rng, (32, 12), 2.0), rng.normal(0.2, 0.1, 32)), ["x"])
    g.add("n0", Neuron(LIF), ["fc0"])
    g.add("fc1", Dense(_w(rng, (5, 32), 1.0), rng.normal(0, 0.1, 5)), ["n0"])
    g.add("out", Readout("mean"), ["fc1"])
    _assert_same(g, rng.random((3, 12)), 10)


@pytest.mark.parametrize("batch,hidden", [(3, 24), (1, 160)])  # (1, 160): column-split path
def test_recurrent(rng, batch, hidden, kernel):
    g = SpikeGraph("rnn")
    g.add("x", Input((6,)))
    g.add("ih", Dense(_w(rng, (hidden, 6), 2.0), rng.normal(0.2, 0.1, hidden)), ["x"])
    g.add("h", Neuron(LIF), ["ih"])
    g.add("hh", Dense(_w(rng, (hidden, hidden), 1.5)), ["h"])
    g.connect("hh", "h", 1)
    g.add("fc", Dense(_w(rng, (4, hidden), 1.0), rng.normal(0.0, 0.1, 4)), ["h"])
    g.add("n", Neuron(IF_SOFT), ["fc"])
    g.add("out", Readout("count"), ["n"])
    _assert_same(g, rng.random((batch, 6)), 15)


def test_spike_encoded_input(rng, kernel):
    g = SpikeGraph("spike-in")
    g.add("x", Input((30,), encoding="spike"))
    g.add("fc0", Dense(_w(rng, (25, 30), 4.0), rng.normal(0.2, 0.1, 25)), ["x"])
    g.add("n0", Neuron(LIF), ["fc0"])
    g.add("fc1", Dense(_w(rng, (8, 25), 4.0), rng.normal(0.2, 0.1, 8)), ["n0"])
    g.add("n1", Neuron(IF_SOFT), ["fc1"])
    g.add("out", Readout("count"), ["n1"])
    x = (rng.random((3, 10, 30)) < 0.2).astype(np.float64)
    _assert_same(g, x, 10)


@pytest.mark.parametrize("name", ["mlp", "spike", "sew", "ms", "rnn"])
def test_shared_graphs(rng, name, kernel):
    if name == "mlp":
        g, x = graphs.mlp(rng), rng.random((3, 1, 8, 8))
    elif name == "rnn":
        g, x = graphs.rnn(rng), rng.random((3, 5))
    else:
        g, x = graphs.residual(rng, name), rng.random((2, 2, 6, 6))
    _assert_same(g, x, 6, rates=False)


def test_grouped_dilated_convs_and_multi_step_delays(rng, kernel):
    """Grouped and dilated convs (one depthwise, on a 2-step recurrent loop) and a skip edge delayed by 4 steps."""
    def conv(c_in, c_out, groups, stride, pad, dilation, gain):
        return Conv(_w(rng, (c_out, c_in // groups, 3, 3), gain), rng.normal(0, 0.1, c_out), stride, pad, dilation,
                    groups)
    g = SpikeGraph("grouped-dilated-delayed")
    g.add("x", Input((4, 10, 10), encoding="spike"))
    g.add("c1", conv(4, 6, 2, (1, 1), (2, 2), (2, 2), 5.0), ["x"])            # (6, 10, 10)
    g.add("n1", Neuron(LIF), ["c1"])
    g.add("c2", conv(6, 6, 2, (2, 1), (1, 2), (1, 2), 3.0), ["n1"])           # (6, 5, 10)
    g.add("n2", Neuron(LIF), ["c2"])
    g.add("rec", conv(6, 6, 6, (1, 1), (2, 2), (2, 2), 1.0), ["n2"])          # depthwise
    g.connect("rec", "n2", 2)
    g.add("c3", conv(6, 6, 3, (2, 1), (1, 2), (1, 2), 3.0), [Port("n1", 4)])  # 4 steps late
    g.add("n3", Neuron(LIF), ["c3", "n2"])
    g.add("flat", Flatten(), ["n3"])
    g.add("fc", Dense(_w(rng, (5, 300), 3.0), rng.normal(0.2, 0.1, 5)), ["flat"])
    g.add("n4", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["n4"])
    _assert_same(g, (rng.random((2, 12, 4, 10, 10)) < 0.3).astype(np.float64), 12)


def test_batch_chunks_and_buffer_reuse(rng, monkeypatch):
    g = graphs.mlp(rng)
    x = rng.random((5, 1, 8, 8))
    plan = numba_sim.Plan(g)
    whole = plan.run(x, 6, record=True)
    monkeypatch.setattr(numba_sim, "_BUFFER_BUDGET", 1)  # one sample per chunk
    again = numba_sim.Plan(g).run(x, 6, record=True)
    for p in whole.trains:
        assert np.array_equal(whole.trains[p], again.trains[p])
    assert np.array_equal(whole.output, again.output)
    assert np.array_equal(plan.run(x, 6).output, whole.output)  # reused buffers


GEOMETRIES = [((1, 1), 1), ((2, 3), 1), ((1, 2), 3), ((2, 2), 3)]  # (dilation, groups): plain, dilated,
# grouped, grouped and dilated


def _conv_case(rng, dilation, groups, stride, x):
    """Weights, bias, the torch conv2d of x (batch, C_in, H, W) and the kernels' geometry arguments."""
    c_out, c_in, k = 6, x.shape[1], 3
    weight = rng.normal(size=(c_out, c_in // groups, k, k))
    bias = rng.normal(size=c_out)
    ref = F.conv2d(torch.as_tensor(x), torch.as_tensor(weight), torch.as_tensor(bias), stride=stride,
                   padding=(1, 2), dilation=dilation, groups=groups).numpy()
    dims = (*x.shape[2:], *ref.shape[2:], *stride, 1, 2, *dilation)
    return weight, bias, ref, dims


@pytest.mark.parametrize("dilation, groups", GEOMETRIES)
def test_event_convs_match_conv2d(rng, dilation, groups):
    """Both event-driven convs (scatter per event, gather per output pixel) on counts, with the layouts
    numba_rules prepares (weights per input channel to its group's outputs)."""
    x = (rng.random((1, 3, 9, 7)) < 0.3) * rng.integers(1, 3, (1, 3, 9, 7)).astype(np.float64)  # counts
    # x-stride 1: the scatter's contiguous kernel-row path (without groups and dilation); 2: one tap at a time
    for stride in ((2, 1), (1, 2)):
        weight, bias, ref, dims = _conv_case(rng, dilation, groups, stride, x)
        op = Conv(weight, bias, stride, (1, 2), dilation, groups)
        d = numba_rules.RULES[Conv][0](op, TensorType(Kind.COUNT, x.shape[1:]), TensorType(Kind.ANALOG, ref.shape[1:]))
        assert d["dims"] == dims
        for kernel, wk in ((numba_kernels.conv_rows, d["w_f"]), (numba_kernels.conv_events, d["w_g"])):
            out = np.empty((1, ref.size))
            total = kernel(0, 1, x.reshape(1, -1), wk, bias, out, *dims, 3 // groups)
            np.testing.assert_allclose(out.reshape(ref.shape), ref, rtol=1e-12, atol=1e-12)
            assert np.isclose(total, ref.sum())


def test_dense_cost_model():
    """The product wins only for dense inputs in many rows (measured crossovers: docs/methods.md)."""
    assert numba_rules.dense_product_wins(1.0, 256, 784, 1024)
    assert not numba_rules.dense_product_wins(0.5, 256, 784, 1024)
    assert not numba_rules.dense_product_wins(1.0, 16, 784, 1024)


@pytest.mark.parametrize("dilation, groups", GEOMETRIES)
def test_unfolded_conv_matches_conv2d(rng, dilation, groups):
    """The dense conv path: im2col then one product per sample and group, vs torch's conv2d."""
    x = rng.normal(size=(2, 3, 9, 7))
    weight, bias, ref, dims = _conv_case(rng, dilation, groups, (2, 1), x)
    ref = ref - bias[:, None, None]  # the product alone
    cols = np.full((2, 3 * 9, ref.shape[2] * ref.shape[3]), np.nan)
    numba_kernels.im2col(0, 2, x.reshape(2, -1), cols, 3, 3, *dims)
    got = np.matmul(weight.reshape(groups, 6 // groups, -1), cols.reshape(2, groups, -1, cols.shape[2]))
    np.testing.assert_allclose(got.reshape(ref.shape), ref, rtol=1e-12, atol=1e-12)


def test_unknown_op_is_refused(rng):
    class Twice(Add):
        pass

    g = SpikeGraph("odd")
    g.add("x", Input((4,)))
    g.add("a", Dense(np.eye(4)), ["x"])
    g.add("b", Dense(np.eye(4)), ["x"])
    g.add("t", Twice(), ["a", "b"])
    g.add("n", Neuron(LIF), ["t"])
    g.add("out", Readout("count"), ["n"])
    with pytest.raises(NotImplementedError, match=r"Twice.*\bt\b"):
        numba_sim.run(g, np.ones((1, 4)), 2)


def test_uses_the_one_neuron_definition():
    from snncc import neuron

    assert numba_kernels.charge.py_func is neuron.charge
    assert numba_kernels.step.py_func.__code__ is neuron.step.__code__


@pytest.mark.parametrize("mode", ["max", "avg", "sum"])
def test_pool_kernel_matches_reference_bit_for_bit(rng, mode):
    """5x5 windows over ~30% spikes: sum pooling must give exact integer counts (7/25*25 != 7 would not)."""
    x = (rng.random((2, 3, 9, 9)) < 0.3).astype(np.float64)
    op = Pool(mode, (5, 5), (2, 2), (2, 2))
    ref = torch_backend.pool(op, [torch.as_tensor(x)]).numpy()
    out = np.empty((2, ref[0].size))
    numba_kernels.pool(x.reshape(2, -1), out, 3, 9, 9, 5, 5, 5, 5, 2, 2, 2, 2, ["max", "avg", "sum"].index(mode))
    assert np.array_equal(out.reshape(ref.shape), ref)
    if mode == "sum":
        assert np.array_equal(ref, np.round(ref)) and (ref == 7).any()


def test_float32_representable_weights_take_the_float32_path_and_stay_exact(rng):
    from graphs import mlp

    g = mlp(rng)
    for n in g.synapses():  # round the weights to float32 values, as a trained network has
        op = g.op(n)
        object.__setattr__(op, "weight", op.weight.astype(np.float32).astype(np.float64))
    plan = numba_sim.Plan(g)
    assert any(node.data.get("w_t") is not None and node.data["w_t"].dtype == np.float32
               for node in plan.nodes.values())
    x = rng.random((6, 1, 8, 8))
    a, b = numba_sim.run(g, x, 6, record=True), torch_backend.run(g, x, 6, record=True)
    assert all(np.array_equal(a.trains[n], b.trains[n]) for n in b.trains)


def test_simulator_refuses_a_second_module_name(monkeypatch):
    """Importing the kernels' file as `sims.numba_kernels` would pollute numba's disk cache for
    snncc.sims.numba_kernels (the module holding the cached kernels)."""
    import importlib.util
    from pathlib import Path

    path = Path(numba_kernels.__file__)
    spec = importlib.util.spec_from_file_location("sims.numba_kernels", path)
    with pytest.raises(ImportError, match="snncc.sims.numba_kernels"):
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


def test_conv_kernel_choice_follows_the_geometry(rng):
    """conv_gather_wins: whole-row scatter up to ~12 active channels per input pixel (3x3, stride 1), the gather from
    4 % density where the scatter cannot add whole kernel rows (stride 2, 1x1), the old events-per-field rule for
    grouped convs (the gather's fixed cost per group)."""
    def data(c_in, c_out, k, stride, hw, groups=1):
        op = Conv(rng.normal(size=(c_out, c_in // groups, k, k)), None, (stride, stride), (k // 2, k // 2),
                  groups=groups)
        ho = (hw + 2 * (k // 2) - k) // stride + 1
        return numba_rules._prep_conv(op, TensorType(Kind.SPIKE, (c_in, hw, hw)),
                                      TensorType(Kind.SPIKE, (c_out, ho, ho)))
    wins = numba_rules.conv_gather_wins
    d32, d128 = data(32, 32, 3, 1, 32), data(128, 128, 3, 1, 8)
    assert not wins(0.25, d32) and wins(0.4, d32)         # 8 vs 12.8 active channels per pixel
    assert not wins(0.08, d128) and wins(0.1, d128)       # 10.2 vs 12.8
    for d in (data(64, 128, 3, 2, 16), data(64, 128, 1, 2, 16), data(64, 64, 1, 1, 16)):
        assert not wins(0.03, d) and wins(0.05, d)
    grouped = data(64, 64, 3, 1, 16, groups=4)           # 16 inputs per group and tap: 144 per field
    assert not wins(0.3, grouped) and wins(0.34, grouped)
