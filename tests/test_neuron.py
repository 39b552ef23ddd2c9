"""The single neuron definition against closed-form traces, on every numeric type it must run on."""
import numba
import numpy as np
import pytest
import torch

from snncc import neuron as nrn
from snncc.neuron import NeuronParams


def simulate(params, xs, lib="python"):
    scalars, v_rest = params.scalars(), params.v_rest
    v = v_rest if lib == "python" else (np.float64(v_rest) if lib == "numpy" else torch.tensor(v_rest, dtype=torch.float64))
    vs, ss = [], []
    for x in xs:
        s, v = nrn.step(v, x, *scalars)
        vs.append(float(v))
        ss.append(float(s))
    return np.array(ss), np.array(vs)


@pytest.mark.parametrize("lib", ["python", "numpy", "torch"])
def test_lif_constant_input_charges_exponentially(lib):
    tau, x = 4.0, 0.5
    p = NeuronParams("lif", tau=tau, v_th=10.0)
    s, v = simulate(p, [x] * 20, lib)
    t = np.arange(1, 21)
    assert not s.any()
    np.testing.assert_allclose(v, x * (1 - (1 - 1 / tau) ** t), rtol=1e-12)


def test_lif_impulse_decays_geometrically():
    tau, a = 2.0, 1.0
    p = NeuronParams("lif", tau=tau, v_th=5.0, v_reset=0.0)
    _, v = simulate(p, [a] + [0.0] * 9)
    np.testing.assert_allclose(v, (a / tau) * (1 - 1 / tau) ** np.arange(10), rtol=1e-12)


def test_lif_leaks_towards_reset_value_under_hard_reset():
    p = NeuronParams("lif", tau=2.0, v_th=1.0, v_reset=-0.5)
    _, v = simulate(p, [0.0] * 30)
    np.testing.assert_allclose(v, -0.5)  # starts at v_reset and stays there without input


def test_firing_uses_greater_or_equal():
    # IF with input 0.25: H reaches exactly 1.0 at the 4th step and must fire (Heaviside(0) = 1).
    p = NeuronParams("if", v_th=1.0, reset="hard")
    s, v = simulate(p, [0.25] * 8)
    assert s.tolist() == [0, 0, 0, 1, 0, 0, 0, 1]
    assert v[3] == 0.0


@pytest.mark.parametrize("reset", ["hard", "soft"])
def test_tau_one_lif_is_a_stateless_threshold(reset):
    """tau = 1 forgets the membrane: s[t] = (x[t] + v_rest >= v_th), even where v + (x - v) would
    round differently (v = -1e17 after a large negative input, then x = 1: -1e17 + (1 + 1e17) == 0)."""
    p = NeuronParams("lif", tau=1.0, v_th=0.5, reset=reset)
    xs = [-1e17, 1.0, 0.5, np.nextafter(0.5, 0), -3.0, 0.7]
    s, _ = simulate(p, xs)
    assert s.tolist() == [0, 1, 1, 0, 0, 1]
    v = p.v_rest
    for x in xs:  # the compiled kernel function too
        sj, v = numba.njit(nrn.step)(v, x, *p.scalars())
        assert sj == float(x >= 0.5)


def test_soft_reset_subtracts_threshold_and_keeps_residue():
    p = NeuronParams("if", v_th=1.0, reset="soft")
    s, v = simulate(p, [0.75] * 4)
    assert s.tolist() == [0, 1, 1, 1]
    np.testing.assert_allclose(v, [0.75, 0.5, 0.25, 0.0])


def test_hard_reset_sets_reset_value():
    p = NeuronParams("lif", tau=2.0, v_th=1.0, v_reset=0.2)
    s, v = simulate(p, [3.0, 0.0])
    assert s.tolist() == [1, 0]
    assert v[0] == 0.2


def test_same_functions_compile_with_numba():
    step = numba.njit(nrn.step)
    p = NeuronParams("lif", tau=3.0, v_th=0.6)
    rng = np.random.default_rng(1)
    xs = rng.normal(0.4, 0.5, size=50)
    s_ref, v_ref = simulate(p, xs)
    v = p.v_rest
    for t, x in enumerate(xs):
        s, v = step(v, x, *p.scalars())
        assert s == s_ref[t] and v == v_ref[t]


@pytest.mark.parametrize("kwargs, match", [
    ({"model": "izh"}, "unknown neuron model"),
    ({"reset": "none"}, "unknown reset"),
    ({"tau": 0.9}, "tau must be >= 1"),
    ({"v_th": 0.0}, "must exceed"),
])
def test_bad_parameters_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NeuronParams(**kwargs)


@pytest.mark.parametrize("params", [NeuronParams("lif", tau=2.0, v_th=0.2), NeuronParams("lif", tau=4.0, v_th=1.0, v_reset=-0.5),
                                    NeuronParams("lif", tau=2.0, v_th=1.0, reset="soft"), NeuronParams("if", v_th=0.7),
                                    NeuronParams.from_decay(0.2, 0.5), NeuronParams.from_decay(0.75, 0.5, -0.25)],
                         ids=["lif", "lif-reset-below-0", "lif-soft", "if", "mskd-eq1", "no-input-decay-reset-below-0"])
@pytest.mark.parametrize("steps", [1, 2, 4, 7])
def test_firing_current_is_the_smallest_constant_input_that_fires_in_time(params, steps):
    level = params.firing_current(steps)
    fires_by = lambda x: simulate(params, [x] * steps)[0].any()  # noqa: E731
    assert fires_by(level * (1 + 1e-9) + 1e-12)
    assert not fires_by(level * (1 - 1e-6))
    assert params.firing_current(steps + 1) < level  # more steps: a weaker current suffices
    with pytest.raises(ValueError, match="steps must be >= 1"):
        params.firing_current(0)
