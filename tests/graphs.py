"""Small spike graphs shared by tests (built directly with the IR API)."""
import numpy as np

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Neuron, Pool, Readout
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
