"""Small spike graphs shared by tests (built directly with the IR API)."""
import numpy as np

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Neuron, Pool, Readout  # noqa: F401
from snncc.neuron import NeuronParams

LIF = NeuronParams("lif", tau=2.0, v_th=0.5)


def mlp(rng, sizes=(64, 48, 32, 10), gain=2.0, shape=(1, 8, 8)):
    g = SpikeGraph("mlp", {"timesteps": 6, "dataset": "digits"})
    g.add("x", Input(shape))
    g.add("flat", Flatten(), ["x"])
    src = "flat"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        g.add(f"fc{i}", Dense(rng.normal(0, gain / np.sqrt(a), (b, a)), rng.normal(0, 0.1, b)), [src])
        src = g.add(f"lif{i}", Neuron(LIF), [f"fc{i}"])
    g.add("out", Readout("count"), [src])
    return g


def conv(rng, c_in, c_out, k=3, gain=2.0):
    return Conv(rng.normal(0, gain / np.sqrt(c_in * k * k), (c_out, c_in, k, k)), rng.normal(0, 0.1, c_out),
                (1, 1), (1, 1))


def residual(rng, style):
    """stem conv -> LIF -> one residual block of the given style -> pool -> dense -> LIF -> readout."""
    g = SpikeGraph(f"{style}-block", {"timesteps": 4})
    g.add("x", Input((2, 6, 6)))
    g.add("stem", conv(rng, 2, 4), ["x"])
    g.add("sn0", Neuron(LIF), ["stem"])
    g.add("conv1", conv(rng, 4, 4), ["sn0"])
    g.add("sn1", Neuron(LIF), ["conv1"])
    g.add("conv2", conv(rng, 4, 4), ["sn1"])
    if style == "spike":  # shortcut spikes and block current converge on one population
        g.add("sn2", Neuron(LIF), ["conv2", "sn0"])
        out = "sn2"
    elif style == "sew":  # spike-element-wise ADD: counts flow on
        g.add("sn2", Neuron(LIF), ["conv2"])
        out = g.add("add", Add(), ["sn2", "sn0"])
    else:  # ms: membrane shortcut, the residual stream carries pre-spike values
        g.add("add", Add(), ["conv2", "stem"])
        g.add("sn2", Neuron(LIF), ["add"])
        g.add("down", conv(rng, 4, 4), ["add"])
        g.add("sn3", Neuron(LIF), ["down"])
        out = "sn3"
    g.add("pool", Pool("avg", (2, 2), (2, 2)), [out])
    g.add("flat", Flatten(), ["pool"])
    g.add("fc", Dense(rng.normal(0, 0.3, (5, 36))), ["flat"])
    g.add("sn_out", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["sn_out"])
    return g


def rnn(rng, n_in=5, n_h=12):
    g = SpikeGraph("rnn", {"timesteps": 8})
    g.add("x", Input((n_in,)))
    g.add("ih", Dense(rng.normal(0, 1.0, (n_h, n_in))), ["x"])
    g.add("h", Neuron(NeuronParams("if", v_th=1.0, reset="soft")), ["ih"])
    g.add("hh", Dense(rng.normal(0, 0.5, (n_h, n_h))), ["h"])
    g.connect("hh", "h", 1)
    g.add("out", Readout("count"), ["h"])
    return g


LIF_HARD = NeuronParams("lif", tau=2.0, v_th=0.5)
IF_HARD = NeuronParams("if", v_th=1.0)


def cnn(rng, encoding="direct"):
    """conv -> LIF (tau 1.5: inexact decay; v_reset -0.25) -> max-pool -> conv -> LIF -> avg-pool -> flatten
    -> dense -> LIF: the conformance CNN shared by the Lava float and fixed-point tests."""
    g = SpikeGraph("cnn", {"timesteps": 6})
    g.add("x", Input((1, 8, 8), encoding))
    g.add("c1", Conv(rng.normal(0, 1.2, (3, 1, 3, 3)), rng.normal(0.1, 0.1, 3), (1, 1), (1, 1)), ["x"])
    g.add("s1", Neuron(NeuronParams("lif", tau=1.5, v_th=0.625, v_reset=-0.25)), ["c1"])
    g.add("mp", Pool("max", (2, 2), (2, 2)), ["s1"])
    g.add("c2", Conv(rng.normal(0, 0.8, (4, 3, 3, 3)), rng.normal(0, 0.1, 4), (1, 1), (1, 1)), ["mp"])
    g.add("s2", Neuron(LIF_HARD), ["c2"])
    g.add("ap", Pool("avg", (2, 2), (2, 2)), ["s2"])
    g.add("fl", Flatten(), ["ap"])
    g.add("fc", Dense(rng.normal(0, 1.5, (5, 16)), rng.normal(0.1, 0.1, 5)), ["fl"])
    g.add("s3", Neuron(LIF_HARD), ["fc"])
    g.add("out", Readout("count"), ["s3"])
    return g


def rnn_hard(rng, n_in=5, n_h=12):
    """IF RNN with hard reset (Lava-expressible), plus a bias on the recurrent synapse (starts at t=1)."""
    g = SpikeGraph("rnn-hard", {"timesteps": 8})
    g.add("x", Input((n_in,)))
    g.add("ih", Dense(rng.normal(0, 1.0, (n_h, n_in))), ["x"])
    g.add("h", Neuron(IF_HARD), ["ih"])
    g.add("hh", Dense(rng.normal(0, 0.5, (n_h, n_h)), rng.normal(0.05, 0.05, n_h)), ["h"])
    g.connect("hh", "h", 1)
    g.add("out", Readout("count"), ["h"])
    return g
