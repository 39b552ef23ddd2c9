"""Conv synapses lowered to lava.proc.conv.process.Conv: layout bridge (C, H, W) <-> Lava's
(X, Y, C), spatially flipped kernel, one-step delay like Dense; float spike-for-spike vs the
torch reference; fixed point bit-exact vs lava_fixed's integer reference (which computes the
conv itself with torch, independent of Lava's scipy conv). Each Lava run costs 1-3 s."""
import json

import numpy as np
import pytest

from lavatest import require_lava
from snncc.backends import torch_ref as torch_backend
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Conv, Dense, Flatten, Input, Neuron, Pool, Readout
from snncc.neuron import NeuronParams

lb, lf = require_lava()

LIF = NeuronParams("lif", tau=2.0, v_th=0.5)
IF = NeuronParams("if", v_th=1.0)


def strided_cnn(rng, encoding="direct"):
    """Stride/padding/asymmetric convs, a 1x1 conv and a strided "downsample" conv converging
    on one population (the latter through a relay), a conv + identity shortcut, an avg pool
    folded into a conv (Toeplitz), flatten + dense."""
    g = SpikeGraph("strided-cnn", {"timesteps": 6})
    g.add("x", Input((2, 9, 10), encoding))
    g.add("c1", Conv(rng.normal(0, 1.0, (4, 2, 3, 3)), rng.normal(0.2, 0.1, 4), (1, 1), (1, 1)), ["x"])
    g.add("s1", Neuron(LIF), ["c1"])                                                        # 4x9x10
    g.add("c2", Conv(rng.normal(0.05, 0.6, (6, 4, 3, 2)), rng.normal(0.1, 0.1, 6), (2, 1), (1, 0)), ["s1"])
    g.add("s2", Neuron(IF), ["c2"])                                                         # 6x5x9
    g.add("c3", Conv(rng.normal(0.1, 0.7, (5, 6, 1, 1))), ["s2"])                            # 1x1
    g.add("c4", Conv(rng.normal(0.05, 0.5, (5, 4, 3, 2)), None, (2, 1), (1, 0)), ["s1"])     # downsample
    g.add("s3", Neuron(LIF), ["c3", "c4"])                                                  # 5x5x9
    g.add("c5", Conv(rng.normal(0.0, 0.5, (5, 5, 3, 3)), rng.normal(0.0, 0.05, 5), (1, 1), (1, 1)), ["s3"])
    g.add("s4", Neuron(LIF), ["c5", "s3"])                                                  # identity shortcut
    g.add("ap", Pool("avg", (2, 2), (2, 2)), ["s4"])                                        # 5x2x4
    g.add("c6", Conv(rng.normal(0.3, 1.0, (3, 5, 2, 2)), rng.normal(0.1, 0.05, 3)), ["ap"])  # 3x1x3: Toeplitz
    g.add("s5", Neuron(LIF), ["c6"])
    g.add("fl", Flatten(), ["s5"])
    g.add("fc", Dense(rng.normal(0.3, 1.0, (4, 9)), rng.normal(0.1, 0.1, 4)), ["fl"])
    g.add("s6", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["s6"])
    return g


def grouped_cnn(rng, encoding="spike"):
    """Dilated and grouped convs (a depthwise one), as lava Conv processes and, behind a sum pool, unrolled."""
    g = SpikeGraph("grouped-cnn", {"timesteps": 6})
    g.add("x", Input((4, 9, 9), encoding))
    g.add("c1", Conv(rng.normal(0.1, 1.0, (6, 2, 3, 3)), rng.normal(0.2, 0.1, 6), (1, 1), (2, 1), (2, 1), 2), ["x"])
    g.add("s1", Neuron(LIF), ["c1"])                                                        # 6x9x9
    g.add("c2", Conv(rng.normal(0.3, 1.0, (6, 1, 2, 3)), None, (1, 2), (0, 1), (3, 2), 6), ["s1"])
    g.add("s2", Neuron(IF), ["c2"])                                                         # 6x6x4
    g.add("sp", Pool("sum", (2, 1), (2, 1)), ["s2"])                                        # 6x3x4
    g.add("c3", Conv(rng.normal(0.2, 0.8, (4, 3, 2, 2)), rng.normal(0.1, 0.05, 4), dilation=(2, 2), groups=2), ["sp"])
    g.add("s3", Neuron(LIF), ["c3"])                                                        # 4x1x2: Toeplitz
    g.add("out", Readout("count"), ["s3"])
    return g


def _inputs(rng, g, batch, T, gain=1.0):
    (inp,) = g.input_nodes
    shape = g.type_of(inp).shape
    if g.op(inp).encoding == "spike":
        return (rng.random((batch, T, *shape)) < 0.35).astype(np.float64)
    return rng.random((batch, *shape)) * gain


def _check_activity(ref, g):
    for n in g.populations():
        count, rate = int(ref.trains[n].sum()), ref.trains[n].mean()
        assert count >= 3 and rate < 0.9, f"trivial firing ({count} spikes, rate {rate:.3f}) in {n}"


def test_lava_kernel_layout_matches_torch():
    """lava_kernel + Lava's own CPU conv function (what PyConvModel* calls each step) on
    (H, W, C) input == torch conv2d on (C, H, W), for asymmetric kernel/stride/padding."""
    import torch
    import torch.nn.functional as F
    from lava.proc.conv import utils
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 2, 3, 2))
    x = rng.normal(size=(2, 7, 6))
    x4 = rng.normal(size=(4, 9, 8))
    for x, w, stride, pad, dil, groups in [(x, w, (1, 1), (1, 1), (1, 1), 1), (x, w, (2, 1), (1, 0), (1, 1), 1),
                                           (x, w, (1, 3), (0, 2), (1, 1), 1), (x, w, (1, 2), (2, 1), (2, 3), 1),
                                           (x4, rng.normal(size=(6, 2, 3, 2)), (2, 1), (1, 2), (3, 2), 2),
                                           (x4, rng.normal(size=(4, 1, 2, 2)), (1, 1), (0, 0), (2, 1), 4)]:
        want = F.conv2d(torch.tensor(x[None]), torch.tensor(w), stride=stride, padding=pad, dilation=dil,
                        groups=groups).numpy()[0]
        got = utils.conv(x.transpose(1, 2, 0), lb.lava_kernel(w), w.shape[2:], stride, pad, dil, groups)
        np.testing.assert_allclose(got.transpose(2, 0, 1), want, atol=1e-12)
        np.testing.assert_allclose(lb.conv_matrix_sparse(w, x.shape, stride, pad, dil, groups) @ x.ravel(),
                                   want.ravel(), atol=1e-12)


def test_plan_chooses_conv_per_synapse(tmp_path):
    g = strided_cnn(np.random.default_rng(1))
    plan = lb.lower(g)
    kinds = {c.name: c.kind for c in plan.conns}
    for name in ("c2->s2", "c3->s3", "c4->s3", "c5->s4"):
        assert kinds[name] == "conv", (name, kinds[name])
    by = {c.name: c for c in plan.conns}
    assert by["c2->s2"].conv == {"in_shape": (4, 9, 10), "out_shape": (6, 5, 9), "stride": (2, 1), "padding": (1, 0),
                                 "dilation": (1, 1), "groups": 1}
    assert by["c2->s2"].weight.shape == (6, 4, 3, 2)          # kept in snncc's layout in the plan
    assert by["c4->s3"].hops == 2 and by["c4->s3"].src == "s1~relay1"   # downsample meets conv2's hop
    assert kinds["s3->s4"] == "sparse" and by["s3->s4"].role == "identity"
    assert kinds["c6->s5"] == "dense" and "Toeplitz" in by["c6->s5"].note   # avg pool folded
    assert kinds["fc->s6"] == "dense"
    assert kinds["s1~relay1.in"] == "sparse"
    # recorded in the artifact and the summary
    lb.compile_graph(g, tmp_path / "art")
    cfg = json.loads((tmp_path / "art" / "lava.json").read_text())
    procs = {p["name"]: p for p in cfg["processes"]}
    assert procs["c2->s2"]["type"] == "Conv" and procs["c2->s2"]["conv"]["stride"] == [2, 1]
    assert procs["c6->s5"]["type"] == "Dense" and "Toeplitz" in procs["c6->s5"]["lowering"]
    assert procs["s3->s4"]["type"] == "Sparse"
    summary = (tmp_path / "art" / "summary.txt").read_text()
    assert "Conv   c2->s2" in summary and "[lava Conv]" in summary
    g2, _ = lb.load_artifact(tmp_path / "art")
    assert lb.lower(g2).to_json() == json.loads(json.dumps(lb.lower(g).to_json()))


@pytest.mark.parametrize("make, encoding", [(strided_cnn, "direct"), (strided_cnn, "spike"), (grouped_cnn, "spike")])
def test_float_conv_equals_torch(make, encoding):
    rng = np.random.default_rng(1)
    g = make(rng, encoding)
    T, batch = 6, 2
    x = _inputs(rng, g, batch, T, 1.5)
    ref = torch_backend.run(g, x, T, record=True)
    _check_activity(ref, g)
    got = lb.run(g, x, T, record=True)
    assert set(got.trains) == set(g.populations())
    for n in g.populations():
        assert got.trains[n].shape == ref.trains[n].shape == (T, batch, *g.type_of(n).shape)
        assert np.array_equal(got.trains[n], ref.trains[n]), f"population {n} differs"
    assert np.array_equal(got.output, ref.output)
    for n, v in ref.activity.items():
        assert got.activity[n] == pytest.approx(v, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("make, encoding, convs", [(strided_cnn, "direct", ("c2->s2", "c3->s3", "c4->s3", "c5->s4")),
                                                   (strided_cnn, "spike", ("c2->s2", "c3->s3", "c4->s3", "c5->s4")),
                                                   (grouped_cnn, "spike", ("c1->s1", "c2->s2"))])
def test_fixed_conv_bit_exact(make, encoding, convs):
    rng = np.random.default_rng(1)
    g = make(rng, encoding)
    T, batch = 6, 2
    x = _inputs(rng, g, batch, T, 1.0)
    plan = lb.lower(g, lb.Options(fixed_point=True))
    for name in convs:
        q = plan.fixed.conns[name]
        assert q.kind == "conv" and q.weight_exp >= 0
        kw = lf.lava_conv_kwargs(plan, name)
        assert kw["weight_exp"] == 0       # Lava's CPU Conv ignores it: weights are pre-shifted
        assert np.abs(kw["weight"]).max() == np.abs(lf.lava_weights(q.weight, q.sign_mode)).max() << q.weight_exp
    ref = lf.run_integer(g, x, T, plan=plan, record=True)
    _check_activity(ref, g)
    got = lb.run((g, plan), x, T, record=True)
    flt = torch_backend.run(g, x, T, record=True)
    for n in g.populations():
        assert np.array_equal(got.trains[n], ref.trains[n]), f"population {n} differs"
        assert (ref.trains[n] == flt.trains[n]).mean() > 0.8
    assert np.array_equal(got.output, ref.output)


def test_fixed_conv_negative_exponent_is_clamped():
    """A conv that would want weight_exp < 0 (tiny weights in a_in units) gets 0: Lava's Conv
    has no floor shift. Still bit-exact vs the integer reference (pure numpy, no Lava run)
    and equal to what the equivalent Toeplitz Dense computes with e = 0."""
    rng = np.random.default_rng(1)
    g = strided_cnn(rng, "spike")
    plan = lb.lower(g)
    by = {c.name: c for c in plan.conns}
    assert lf.quant_weights(by["c2->s2"].weight * 2.0, "mixed")[3] < 0   # wanted exponent at k = 1
    fx = lf.quantize_plan(g, plan, scale_exp={"s2": 1})
    q = fx.conns["c2->s2"]
    assert q.weight_exp == 0 and q.kind == "conv"
    row = next(r for r in fx.report if r["layer"] == "c2->s2")
    assert row["process"] == "conv" and row["weight_exp"] == 0
    # the integer reference's conv == the unrolled matrix of the same integer kernel
    w = lf.lava_weights(q.weight, q.sign_mode)
    spikes = (rng.random((3, 4 * 9 * 10)) < 0.4).astype(np.int64)
    m = lb.conv_matrix(w, (4, 9, 10), (2, 1), (1, 0))
    assert np.array_equal(np.rint(lf.conv_apply(spikes, w, by["c2->s2"].conv)),
                          spikes @ m.T)


def test_conv_row_bounds_match_unrolled_matrix():
    """The fixed-point worst-case input bound of a Conv (per output neuron: sum of positive /
    negative incoming weights) equals the row sums of its Toeplitz matrix."""
    rng = np.random.default_rng(2)
    w = rng.normal(size=(3, 2, 3, 2))
    cases = [((1, 1), (1, 1), (1, 1), 1), ((2, 1), (1, 0), (1, 1), 1), ((2, 3), (0, 2), (1, 1), 1),
             ((1, 2), (2, 2), (2, 3), 1), ((1, 1), (1, 0), (2, 1), 3)]
    for stride, pad, dil, groups in cases:
        shape = (2 * groups, 7, 6)
        m = lb.conv_matrix(w, shape, stride, pad, dil, groups)
        ho = (7 + 2 * pad[0] - dil[0] * 2 - 1) // stride[0] + 1
        wo = (6 + 2 * pad[1] - dil[1] - 1) // stride[1] + 1
        cv = {"in_shape": shape, "out_shape": (3, ho, wo), "stride": stride, "padding": pad, "dilation": dil,
              "groups": groups}
        pos, neg = lf.row_pos_neg(w, cv)
        np.testing.assert_allclose(pos, np.where(m > 0, m, 0).sum(1), atol=1e-12)
        np.testing.assert_allclose(neg, np.where(m < 0, -m, 0).sum(1), atol=1e-12)


def test_conv_geometry_beyond_lava_conv_fields_is_unrolled():
    """Lava 0.10's Conv models keep kernel size, stride, padding, dilation and groups as int8: a dilation of
    130 would wrap (the run hangs), so that conv becomes its unrolled matrix, spike-exact like the rest."""
    rng = np.random.default_rng(0)
    g = SpikeGraph("wide")
    g.add("x", Input((1, 1, 140), encoding="spike"))
    g.add("c", Conv(np.ones((2, 1, 1, 2)), None, (1, 1), (0, 0), (1, 130)), ["x"])
    g.add("n", Neuron(NeuronParams("if", v_th=1.5)), ["c"])
    g.add("out", Readout("count"), ["n"])
    (conn,) = lb.lower(g).conns
    assert conn.kind == "dense" and "beyond lava Conv's 8-bit fields" in conn.note
    x = (rng.random((1, 6, 1, 1, 140)) < 0.5).astype(np.float64)
    ref = torch_backend.run(g, x, 6, record=True).trains["n"]
    assert ref.sum() >= 5
    np.testing.assert_array_equal(lb.run(g, x, 6, record=True).trains["n"], ref)
