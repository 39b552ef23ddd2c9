"""Fixed-point Lava lowering: Lava's bit-accurate models (select_tag="fixed_pt") against snncc's
independent integer reference (lava_fixed.simulate), spike for spike; quantisation report and
overflow errors; fixed-vs-float accuracy on digits. Each Lava run costs about a second."""
import json

import numpy as np
import pytest

import graphs
from lavatest import require_lava
from snncc.backends import torch_ref as torch_backend
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Dense, Flatten, Input, Neuron, Readout
from snncc.neuron import NeuronParams

lb, lf = require_lava()

LIF_HARD = NeuronParams("lif", tau=2.0, v_th=0.5)
IF_HARD = NeuronParams("if", v_th=1.0)


cnn = graphs.cnn
rnn_hard = graphs.rnn_hard


def _inputs(rng, g, batch, T, gain=1.0):
    (inp,) = g.input_nodes
    shape = g.type_of(inp).shape
    if g.op(inp).encoding == "spike":
        return (rng.random((batch, T, *shape)) < 0.3).astype(np.float64)
    return rng.random((batch, *shape)) * gain   # the plan's input_bound is the gain


CASES = {
    "mlp": (graphs.mlp, 3, 6, 1.0),
    "cnn": (cnn, 2, 6, 1.0),
    "cnn-spike-input": (lambda r: cnn(r, "spike"), 2, 6, 1.0),
    "rnn-hard": (rnn_hard, 2, 8, 1.0),
    "spike-residual": (lambda r: graphs.residual(r, "spike"), 2, 6, 4.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_lava_fixed_equals_integer_reference(case):
    rng = np.random.default_rng(1)
    build, batch, T, gain = CASES[case]
    g = build(rng)
    x = _inputs(rng, g, batch, T, gain)
    plan = lb.lower(g, lb.Options(fixed_point=True)) if gain == 1.0 else lf.lower_fixed(g, input_bound=gain)
    assert plan.precision == "fixed_pt" and plan.fixed is not None
    ref = lf.run_integer(g, x, T, plan=plan, record=True)
    got = lb.run((g, plan), x, T, record=True)
    flt = torch_backend.run(g, x, T, record=True)
    agree = []
    for n in g.populations():
        assert got.trains[n].shape == ref.trains[n].shape
        assert np.array_equal(got.trains[n], ref.trains[n]), f"{case}: population {n} differs"
        count, rate = int(ref.trains[n].sum()), ref.trains[n].mean()
        assert count >= 3 and rate < 0.9, f"{case}: trivial firing ({count} spikes) in {n}"
        agree.append((n, float((ref.trains[n] == flt.trains[n]).mean())))
    assert np.array_equal(got.output, ref.output)
    for n, v in ref.activity.items():
        assert got.activity[n] == pytest.approx(v, rel=1e-12, abs=1e-12)
    # fixed vs float: not equal in general (8-bit weights), but close
    print(f"\n{case}: fixed-vs-float spike agreement " + ", ".join(f"{n}={a:.3f}" for n, a in agree))
    assert min(a for _, a in agree) > 0.85


def test_fixed_params_and_report():
    rng = np.random.default_rng(0)
    g = cnn(rng)
    fx = lf.quantize(g)
    plan = lb.lower(g)
    assert fx.pops["s2"].dv == 2048 and fx.pops["s1"].dv == round(4096 / 1.5) and fx.pops["s1"].du == 4095
    assert fx.pops["mp"].vth == 0 and fx.conns["mp.window"].weight.max() == 1  # OR pool: exact
    rows = {r["layer"]: r for r in fx.report}
    for c in plan.conns:
        if plan.pops[c.dst].role != "neuron":
            continue
        r, q = rows[c.name], fx.conns[c.name]
        assert -8 <= r["weight_exp"] <= 7 and r["clipped"] == 0
        assert r["max_abs_error"] <= r["step"] / 2 * (1 + 1e-9)
        assert r["rel_error"] < 2 ** -6
        if q.sign_mode == "mixed":   # Lava drops the lowest bit of mixed-sign weights
            assert np.all(q.weight % 2 == 0) and np.abs(q.weight).max() <= 256
        assert np.abs(q.weight).max() >= 64  # the exponent uses the mantissa range
    for n in ("s1", "s2", "s3"):
        r = rows[n]
        assert 0 < r["vth"] <= 2 ** 17 - 1 and r["threshold_error"] <= 33 * 2.0 ** -(r["scale_exp"] + 6)
    assert rows["s1"]["decay_error"] > 0 and rows["s2"]["decay_error"] == 0
    print("\n" + lf.lower_fixed(g).fixed.summary())


def test_overflow_errors_are_one_line():
    rng = np.random.default_rng(0)
    g = graphs.mlp(rng)
    with pytest.raises(lb.LoweringError, match=r"threshold of population 'lif1'.*17 bits") as ei:
        lf.quantize(g, scale_exp={"lif1": 20})
    assert "\n" not in str(ei.value) and "0.5" in str(ei.value)
    with pytest.raises(lb.LoweringError, match=r"bias of population 'lif0'.*bias_mant") as ei:
        lf.quantize(g, scale_exp={"lif0": 14})   # worst-case input current 2^20 v units too big
    assert "\n" not in str(ei.value)
    plan = lf.lower_fixed(g)                        # input_bound 1: an input of 50 overflows
    x = rng.random((2, 1, 8, 8))
    x[1] *= 50
    with pytest.raises(lb.LoweringError, match=r"per-sample input bias of population 'lif0' \(sample 1") as ei:
        lf.run_integer(g, x, 4, plan=plan)
    assert "\n" not in str(ei.value)
    # a larger input_bound accepts it (coarser scale)
    big = lf.lower_fixed(g, input_bound=50.0)
    assert big.fixed.pops["lif0"].k < plan.fixed.pops["lif0"].k
    lf.run_integer(g, x, 4, plan=big)


def test_refuses_per_sample_weight_and_soft_reset():
    rng = np.random.default_rng(3)
    g = SpikeGraph("skip-in")
    g.add("x", Input((6,)))
    g.add("fa", Dense(rng.normal(0, 1.0, (8, 6))), ["x"])
    g.add("a", Neuron(LIF_HARD), ["fa"])
    g.add("fb", Dense(rng.normal(0, 0.8, (5, 6))), ["x"])
    g.add("ab", Dense(rng.normal(0, 1.0, (5, 8))), ["a"])
    g.add("b", Neuron(LIF_HARD), ["ab", "fb"])
    g.add("out", Readout("count"), ["b"])
    with pytest.raises(lb.LoweringError, match=r"fixed point: direct-input current into a deeper"):
        lb.lower(g, lb.Options(fixed_point=True))
    with pytest.raises(lb.LoweringError, match="soft reset"):
        lb.lower(graphs.rnn(rng), lb.Options(fixed_point=True))


def test_compile_fixed_artifact(tmp_path):
    g = cnn(np.random.default_rng(0))
    out = lb.compile_graph(g, tmp_path / "art", lb.Options(fixed_point=True))
    g2, cfg = lb.load_artifact(out)
    assert cfg["precision"] == "fixed_pt" and 'select_tag="fixed_pt"' in cfg["run_config"]
    q = cfg["quantization"]
    layers = [r["layer"] for r in q["report"]]
    assert "s1" in layers and "c2->s2" in layers
    assert q["dense"]["c2->s2"]["num_weight_bits"] == 8
    assert "fixed-point quantisation" in (out / "summary.txt").read_text()
    assert lb.lower(g2, lb.Options(fixed_point=True)).to_json() == json.loads(json.dumps(lb.lower(g, lb.Options(fixed_point=True)).to_json()))


def _digits_graph(T=8):
    """64 -> 128 LIF (random projection) -> 10 LIF with a ridge-fitted readout layer."""
    from snncc.data.datasets import load_split
    xtr, ytr = load_split("digits", "train", limit=600)
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 3.0 / np.sqrt(64), (128, 64))
    b1 = rng.normal(0.0, 0.1, 128)
    g = SpikeGraph("digits-rp", {"timesteps": T})
    g.add("x", Input((1, 8, 8)))
    g.add("flat", Flatten(), ["x"])
    g.add("fc1", Dense(w1, b1), ["flat"])
    g.add("h", Neuron(LIF_HARD), ["fc1"])
    g.add("fc2", Dense(np.zeros((10, 128))), ["h"])
    g.add("o", Neuron(LIF_HARD), ["fc2"])
    g.add("out", Readout("count"), ["o"])
    r = torch_backend.run(g, xtr, T, record=True)
    rates = r.trains["h"].mean(axis=0).reshape(len(ytr), -1)           # (N, 128)
    a = np.c_[rates, np.ones(len(ytr))]
    target = np.eye(10)[ytr] * 2.0 - 0.5
    sol = np.linalg.solve(a.T @ a + 1e-1 * np.eye(129), a.T @ target)  # ridge
    h = SpikeGraph("digits-rp", {"timesteps": T, "dataset": "digits"})
    for n in g.order():
        op = g.op(n)
        if n == "fc2":
            op = Dense(sol[:-1].T.copy(), sol[-1].copy())
        h.add(n, op, g.inputs(n))
    return h


def test_digits_fixed_vs_float_accuracy(record_property):
    from snncc.data.datasets import load_split
    T = 8
    g = _digits_graph(T)
    x, y = load_split("digits", "test", limit=300)
    plan = lb.lower(g, lb.Options(fixed_point=True))
    flt = torch_backend.run(g, x, T)
    fix = lf.run_integer(g, x, T, plan=plan)
    acc_f = float((flt.predictions(g) == y).mean())
    acc_q = float((fix.predictions(g) == y).mean())
    agree = float((flt.predictions(g) == fix.predictions(g)).mean())
    record_property("digits_float_acc", acc_f)
    record_property("digits_fixed_acc", acc_q)
    print(f"\ndigits test (n={len(y)}, T={T}): float acc {acc_f:.3f}, fixed acc {acc_q:.3f}, "
          f"prediction agreement {agree:.3f}")
    print(plan.fixed.summary())
    assert acc_f > 0.7 and abs(acc_f - acc_q) <= 0.05
    # Lava's bit-accurate run on a few of those samples is the integer reference exactly
    got = lb.run((g, plan), x[:6], T, record=True)
    ref = lf.run_integer(g, x[:6], T, plan=plan, record=True)
    for n in g.populations():
        assert np.array_equal(got.trains[n], ref.trains[n])
    assert np.array_equal(got.output, fix.output[:6])


def test_multi_step_delays_float_and_fixed(rng):
    """A recurrent edge whose Dense reads the population 2 steps back (3 steps round the loop) and a 4-step
    feed-forward delay: relay chains in Lava; float equals the torch reference, fixed point equals the
    integer reference bit for bit (and here the float spikes too)."""
    from snncc.ir.graph import Port
    g = SpikeGraph("delays")
    g.add("x", Input((5,), encoding="spike"))
    g.add("fc", Dense(rng.normal(0.3, 0.8, (4, 5))), ["x"])
    g.add("n", Neuron(NeuronParams("lif", tau=2.0, v_th=1.0)), ["fc"])
    g.add("rec", Dense(rng.normal(0.0, 0.8, (4, 4))), [Port("n", 2)])
    g.connect("rec", "n", 1)
    g.add("id", Dense(rng.normal(0.5, 0.5, (3, 4))), [Port("n", 4)])
    g.add("m", Neuron(NeuronParams("if", v_th=0.5)), ["id"])
    g.add("out", Readout(), ["m"])
    x = (rng.random((2, 12, 5)) < 0.4).astype(np.float64)
    flt = torch_backend.run(g, x, 12, record=True)
    assert flt.trains["n"].sum() >= 5 and flt.trains["m"].sum() >= 5
    got = lb.run(g, x, 12, record=True)
    plan = lb.lower(g, lb.Options(fixed_point=True))
    assert {c.name: c.hops for c in plan.conns}["rec->n"] == 3
    ref = lf.run_integer(g, x, 12, plan=plan, record=True)
    fixed = lb.run((g, plan), x, 12, record=True)
    for p in ("n", "m"):
        np.testing.assert_array_equal(got.trains[p], flt.trains[p])
        np.testing.assert_array_equal(fixed.trains[p], ref.trains[p])
        np.testing.assert_array_equal(ref.trains[p], flt.trains[p])
