"""Float32 synaptic currents (sims/numba_f32.py): the error bound holds, and every spike equals the float64
torch reference's, also where plain float32 accumulation provably flips one (the exact fallback)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import graphs
from test_numba_sim import _assert_same
from snncc.backends import torch_ref as torch_backend
from snncc.ir.graph import Port, SpikeGraph
from snncc.ir.ops import Conv, Dense, Flatten, Input, Neuron, Readout
from snncc.neuron import NeuronParams
from snncc.sims import numba_f32, numba_rules, numba_sim, numba_torch32

LIF = NeuronParams("lif", tau=2.0, v_th=0.5)


class F32Rng:
    """A numpy Generator whose normal() draws are rounded to float32 (weights exactly float32)."""

    def __init__(self, rng):
        self.rng = rng

    def normal(self, *a, **k):
        return np.asarray(self.rng.normal(*a, **k), np.float32).astype(np.float64)

    def __getattr__(self, name):
        return getattr(self.rng, name)


@pytest.fixture
def force_f32(monkeypatch):
    """Every eligible synapse takes the float32 product whatever its input density."""
    monkeypatch.setattr(numba_rules, "f32_product_wins", lambda *shape: True)
    monkeypatch.setattr(numba_rules, "CONV_F32_MIN_DENSITY", 0.0)


@pytest.fixture(params=["torch", "product"])
def f32_conv(request, monkeypatch):
    """Float32 convs on each product kernel: torch's direct conv, or float32 im2col + numpy sgemm."""
    monkeypatch.setattr(numba_rules, "f32_product_wins", lambda *shape: True)
    monkeypatch.setattr(numba_rules, "CONV_F32_MIN_DENSITY", 0.0)
    monkeypatch.setattr(numba_rules, "CONV_F32_TORCH", request.param == "torch")
    return request.param


def _checked(plan):
    """{neuron: [neuron-steps checked, neurons recomputed]} of a plan's checked populations."""
    return {n: nd.data["f32"]["stats"] for n, nd in plan.nodes.items() if "tree" in nd.data.get("f32", {})}


def test_adversarial_dense_plain_float32_flips_the_fallback_does_not(force_f32):
    """Each output sums 0.5 then 63 terms of 2^-25 (all 64 inputs spike): float32 accumulation in input
    order stays at 0.5 (each add is a tie to even), the exact sum is 0.5 + 63 * 2^-25. The memoryless
    neuron's threshold lies in between, so the reference fires and plain float32 would not."""
    n_in, n_out = 64, 8
    w = np.full((n_out, n_in), 2.0 ** -25)
    w[:, 0] = 0.5
    g = SpikeGraph("adversarial")
    g.add("x", Input((n_in,), encoding="spike"))
    g.add("fc", Dense(w), ["x"])
    g.add("n", Neuron(NeuronParams("lif", tau=1.0, v_th=0.5 + 2.0 ** -22)), ["fc"])
    g.add("out", Readout("count"), ["n"])
    x = np.ones((2, 3, n_in))
    plain = np.float32(0.0)
    for v in w[0].astype(np.float32):  # plain float32 accumulation, in input order
        plain = np.float32(plain + v)
    exact = w[0].sum()
    assert plain < 0.5 + 2.0 ** -22 <= exact  # the construction: float32 in this order flips the spike
    plan = numba_sim.Plan(g)
    got = plan.run(x, 3, record=True)
    ref = torch_backend.run(g, x, 3, record=True)
    assert ref.trains["n"].all()  # the reference fires at every step
    assert np.array_equal(got.trains["n"], ref.trains["n"])
    checked, recomputed = _checked(plan)["n"]
    assert checked == 2 * n_out and recomputed == 2 * n_out  # every neuron was uncertain and recomputed


def test_adversarial_conv_soft_reset_if(f32_conv):
    """A conv version, IF neurons with soft reset over several steps: the tiny weights accumulate into the
    membrane, so a float32 current that drops them changes when the neuron fires."""
    w = np.full((2, 16, 3, 3), 2.0 ** -26)
    w[:, 0, 1, 1] = 0.25
    g = SpikeGraph("adversarial-conv")
    g.add("x", Input((16, 5, 5), encoding="spike"))
    g.add("c", Conv(w, None, (1, 1), (1, 1)), ["x"])
    th = 1.0 + 2.0 ** -24
    g.add("n", Neuron(NeuronParams("if", v_th=th, reset="soft")), ["c"])
    g.add("out", Readout("count"), ["n"])
    x = np.ones((1, 8, 16, 5, 5))
    plan = numba_sim.Plan(g)
    got = plan.run(x, 8, record=True)
    ref = torch_backend.run(g, x, 8, record=True)
    assert np.array_equal(got.trains["n"], ref.trains["n"])
    assert ref.trains["n"].sum() > 0 and _checked(plan)["n"][1] > 0


@pytest.mark.parametrize("groups, stride, pad, dilation", [(1, (1, 1), (1, 1), (1, 1)), (2, (2, 1), (0, 2), (1, 2)),
                                                           (4, (1, 2), (2, 1), (2, 1))])
def test_conv_bound_holds_on_random_cases(rng, f32_conv, groups, stride, pad, dilation):
    """|float32 current - float64 current| <= the bound, per output, over random weights and spike inputs."""
    c_in, c_out = 8, 8
    w = np.float32(rng.normal(0, 1, (c_out, c_in // groups, 3, 3))).astype(np.float64)
    bias = rng.normal(0, 1, c_out)
    op = Conv(w, bias, stride, pad, dilation, groups)
    g = SpikeGraph("c")
    g.add("x", Input((c_in, 9, 7), encoding="spike"))
    g.add("c", op, ["x"])
    g.add("n", Neuron(LIF), ["c"])
    g.add("out", Readout("count"), ["n"])
    plan = numba_sim.Plan(g)
    nd = plan.nodes["c"]
    x = (rng.random((6, c_in * 63)) < 0.5).astype(np.float64)
    out = np.empty((6, nd.size))
    state = {}
    numba_rules.RULES[Conv][1](nd, [x.reshape(1, 6, -1)], out.reshape(1, 6, -1), state, 1)
    ref = F.conv2d(torch.from_numpy(x.reshape(6, c_in, 9, 7)), torch.from_numpy(w), torch.from_numpy(bias),
                   stride, pad, dilation, groups).numpy().reshape(6, c_out, -1)
    bound = state[("c", "f32")][1]
    err = np.abs(out.reshape(6, c_out, -1) - ref)
    assert (err <= bound[:, :, None]).all()
    assert err.max() > 0  # float32 really was inexact here
    exact = numba_f32.EXACT[Conv](nd.data, x, np.repeat(np.arange(6), nd.size), np.tile(np.arange(nd.size), 6))
    np.testing.assert_allclose(exact.reshape(ref.shape), ref, rtol=1e-12, atol=1e-12)


def test_dense_bound_holds_on_random_cases(rng, force_f32):
    w = np.float32(rng.normal(0, 1, (300, 500))).astype(np.float64)
    g = SpikeGraph("d")
    g.add("x", Input((500,), encoding="spike"))
    g.add("fc", Dense(w, rng.normal(0, 1, 300)), ["x"])
    g.add("n", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["n"])
    nd = numba_sim.Plan(g).nodes["fc"]
    x = (rng.random((40, 500)) < rng.random((40, 1))).astype(np.float64)
    out, state = np.empty((40, 300)), {}
    numba_rules.RULES[Dense][1](nd, [x[None]], out[None], state, 1)
    ref = x @ w.T + nd.data["bias"]
    err = np.abs(out - ref)
    assert (err <= state[("fc", "f32")][1]).all() and err.max() > 0
    rows, cols = np.repeat(np.arange(40), 300), np.tile(np.arange(300), 40)
    exact = numba_f32.EXACT[Dense](nd.data, x, rows, cols).reshape(40, 300)
    np.testing.assert_allclose(exact, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "spike", "sew", "ms"])
def test_shared_graphs_on_the_float32_path(rng, f32_conv, name):
    r = F32Rng(rng)
    if name == "mlp":
        g, x = graphs.mlp(r), rng.random((3, 1, 8, 8))
    else:
        g, x = graphs.residual(r, name), rng.random((2, 2, 6, 6))
    plan = numba_sim.Plan(g)
    assert _checked(plan)  # some population is fed by float32 currents
    got = plan.run(x, 6, record=True)
    ref = torch_backend.run(g, x, 6, record=True)
    for p in ref.trains:
        assert np.array_equal(got.trains[p], ref.trains[p]), p


def test_grouped_strided_dilated_convs_and_delays(rng, f32_conv):
    """Float32 convs with groups, stride, padding and dilation; a recurrent loop and a delayed edge stay float64."""
    def conv(c_in, c_out, groups, stride, pad, dilation, gain):
        w = np.float32(rng.normal(0, gain / np.sqrt(9 * c_in // groups), (c_out, c_in // groups, 3, 3)))
        return Conv(w.astype(np.float64), rng.normal(0, 0.1, c_out), stride, pad, dilation, groups)
    g = SpikeGraph("grouped")
    g.add("x", Input((4, 10, 10), encoding="spike"))
    g.add("c1", conv(4, 6, 2, (1, 1), (2, 2), (2, 2), 5.0), ["x"])
    g.add("n1", Neuron(LIF), ["c1"])
    g.add("c2", conv(6, 6, 2, (2, 1), (1, 2), (1, 2), 3.0), ["n1"])
    g.add("n2", Neuron(LIF), ["c2"])
    g.add("rec", conv(6, 6, 6, (1, 1), (2, 2), (2, 2), 1.0), ["n2"])
    g.connect("rec", "n2", 2)
    g.add("c3", conv(6, 6, 3, (2, 1), (1, 2), (1, 2), 3.0), [Port("n1", 4)])
    g.add("n3", Neuron(LIF), ["c3", "n2"])
    g.add("flat", Flatten(), ["n3"])
    g.add("fc", Dense(np.float32(rng.normal(0, 0.2, (5, 300))).astype(np.float64)), ["flat"])
    g.add("n4", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["n4"])
    plan = numba_sim.Plan(g)
    assert set(_checked(plan)) == {"n1", "n4"}  # n2 is on a loop, c3 reads a delayed edge
    x = (rng.random((2, 12, 4, 10, 10)) < 0.3).astype(np.float64)
    _assert_same(g, x, 12, rates=False)


@pytest.mark.parametrize("params", [NeuronParams("lif", tau=2.0, v_th=0.5, tau_syn=2.0), "heterogeneous"])
def test_cuba_and_heterogeneous_neurons_stay_float64(rng, force_f32, params):
    g = SpikeGraph("cuba")
    g.add("x", Input((40,), encoding="spike"))
    g.add("fc", Dense(np.float32(rng.normal(0, 0.5, (30, 40))).astype(np.float64)), ["x"])
    if params == "heterogeneous":
        params = NeuronParams("lif", tau=2.0, v_th=0.5)
        neuron = Neuron(params, v_th=np.linspace(0.25, 0.75, 30))
    else:
        neuron = Neuron(params)
    g.add("n", neuron, ["fc"])
    g.add("out", Readout("count"), ["n"])
    plan = numba_sim.Plan(g)
    assert not _checked(plan) and "f32" not in plan.nodes["fc"].data
    _assert_same(g, (rng.random((3, 8, 40)) < 0.3).astype(np.float64), 8, rates=False)


@pytest.mark.parametrize("name", ["delayed", "spike", "ms"])
def test_recomputing_every_neuron_gives_the_reference(rng, f32_conv, monkeypatch, name):
    """With the bound forced huge, every checked neuron is recomputed exactly (its float64 currents, its
    dynamics replayed): the fallback alone must reproduce the reference, also for inputs read through a
    delayed edge and Adds of float32 currents with exact ones."""
    monkeypatch.setattr(numba_f32, "_bound", lambda info, m: np.full((m.size, info["abs_bias"].size), 1e9))
    r = F32Rng(rng)
    if name == "delayed":
        g = SpikeGraph("delayed")
        g.add("x", Input((30,), encoding="spike"))
        g.add("fa", Dense(r.normal(0, 0.6, (20, 30)), r.normal(0.2, 0.1, 20)), ["x"])
        g.add("na", Neuron(LIF), ["fa"])
        g.add("fb", Dense(r.normal(0, 0.6, (20, 30))), ["x"])
        g.add("nb", Neuron(NeuronParams("if", v_th=1.0, reset="soft")), ["fb", Port("na", 2)])
        g.add("out", Readout("count"), ["nb"])
        x, steps = (rng.random((3, 9, 30)) < 0.4).astype(np.float64), 9
    else:
        g, x, steps = graphs.residual(r, name), rng.random((2, 2, 6, 6)), 6
    plan = numba_sim.Plan(g)
    got = plan.run(x, steps, record=True)
    ref = torch_backend.run(g, x, steps, record=True)
    for p in ref.trains:
        assert np.array_equal(got.trains[p], ref.trains[p]), p
    stats = _checked(plan)
    assert stats and all(s[0] > 0 and s[1] == s[0] for s in stats.values() if s[0])


def _conv_net(rng, c_in, groups, stride, pad, dilation):
    w = np.float32(rng.normal(0, 3.0 / np.sqrt(9 * c_in // groups), (6, c_in // groups, 3, 3)))
    g = SpikeGraph("torch32")
    g.add("x", Input((c_in, 11, 9), encoding="spike"))
    g.add("c", Conv(w.astype(np.float64), rng.normal(0, 0.1, 6), stride, pad, dilation, groups), ["x"])
    g.add("n", Neuron(LIF), ["c"])
    g.add("out", Readout("count"), ["n"])
    return g


@pytest.mark.parametrize("groups, stride, pad, dilation", [(1, (1, 1), (1, 1), (1, 1)), (2, (2, 1), (0, 2), (1, 2)),
                                                           (3, (1, 2), (2, 1), (2, 1)), (6, (2, 2), (1, 1), (1, 1))])
def test_torch_product_spikes_equal_the_reference(rng, force_f32, groups, stride, pad, dilation):
    """Torch's float32 conv as the product (stride, padding, dilation, groups): the reference's spikes, the torch
    path really taken, torch's thread setting restored after a two-thread call."""
    g = _conv_net(rng, 6, groups, stride, pad, dilation)
    x = (rng.random((3, 10, 6, 11, 9)) < 0.4).astype(np.float64)
    before = torch.get_num_threads()
    plan = numba_sim.Plan(g, threads=2)
    got = plan.run(x, 10, record=True)
    assert torch.get_num_threads() == before
    assert "w_torch32" in plan.nodes["c"].data and _checked(plan)["n"][0] > 0
    ref = torch_backend.run(g, x, 10, record=True)
    assert np.array_equal(got.trains["n"], ref.trains["n"]) and ref.trains["n"].sum() > 0


def test_torch_product_refused_under_reduced_precision(rng, force_f32):
    """With torch's float32 matmul precision lowered (implicit bf16/tf32 math, outside the bound), the float32
    path falls back to im2col + numpy sgemm (Dense: numpy's sgemm) and still gives the reference's spikes."""
    g = _conv_net(rng, 4, 2, (1, 1), (1, 1), (1, 1))
    x = (rng.random((2, 8, 4, 11, 9)) < 0.4).astype(np.float64)
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        assert not numba_torch32.direct_conv((2, 4, 11, 9), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2)
        assert numba_torch32.mm_product(np.ones((2, 3)), np.ones((3, 4), np.float32), 1) is None
        plan = numba_sim.Plan(g)
        got = plan.run(x, 8, record=True)
    finally:
        torch.set_float32_matmul_precision(prev)
    assert "w_torch32" not in plan.nodes["c"].data and "w_gemm32" in plan.nodes["c"].data
    assert numba_torch32.direct_conv((2, 4, 11, 9), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2)
    ref = torch_backend.run(g, x, 8, record=True)
    assert np.array_equal(got.trains["n"], ref.trains["n"])


def test_torch_without_its_backend_query_falls_back(rng, force_f32, monkeypatch):
    """If torch lacks (or changed) the internal conv-backend query, the conv product falls back to im2col + numpy
    sgemm instead of failing, with the reference's spikes."""
    def broken(*args):
        raise RuntimeError("changed signature")
    monkeypatch.setattr(torch._C, "_select_conv_backend", broken)
    monkeypatch.setattr(numba_torch32, "_backend_cache", {})
    g = _conv_net(rng, 4, 2, (1, 1), (1, 1), (1, 1))
    x = (rng.random((2, 8, 4, 11, 9)) < 0.4).astype(np.float64)
    assert not numba_torch32.direct_conv((2, 4, 11, 9), (6, 2, 3, 3), (1, 1), (1, 1), (1, 1), 2)
    plan = numba_sim.Plan(g)
    got = plan.run(x, 8, record=True)
    assert "w_torch32" not in plan.nodes["c"].data and "w_gemm32" in plan.nodes["c"].data
    ref = torch_backend.run(g, x, 8, record=True)
    assert np.array_equal(got.trains["n"], ref.trains["n"])
