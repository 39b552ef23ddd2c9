"""NIR's Threshold, Delay (several steps, in a cycle too) and dilated / grouped convolutions:
imported spike-exact against the independent Euler oracle (tests/nir_oracle.py) on torch, numba
and Lava float, refused by node where a backend cannot run them, and exported back to NIR."""
import numpy as np
import pytest

nir = pytest.importorskip("nir")

from nir_oracle import simulate  # noqa: E402
from snncc.backends import torch_ref as torch_backend  # noqa: E402
from snncc.ir.graph import Port, SpikeGraph  # noqa: E402
from snncc.ir.ops import Dense, Input, Neuron, Readout  # noqa: E402
from snncc.neuron import NeuronParams  # noqa: E402
from snncc.nir import NIRExportError, from_nir, to_nir, write_nir  # noqa: E402
from snncc.sims import numba_sim  # noqa: E402

DT = 1e-3
POPS = ("thr", "lif", "thr2", "if")


def new_nodes_graph(rng, low=-0.2):
    """Input (2, 9, 9) -> Conv2d (dilation 2, groups 2) -> Threshold -> Delay (3 steps) -> depthwise
    Conv2d (stride 2) -> LIF -> Flatten -> Affine -> Threshold (at ``low``: below 0 it fires without
    input) -> Delay (2) -> Linear -> IF with a cycle IF -> Delay (2) -> Affine -> IF -> Output."""
    h, s1, s2 = 9, (4, 9, 9), (4, 5, 5)
    nodes = {
        "input": nir.Input(input_type=np.array([2, h, h])),
        "conv": nir.Conv2d(input_shape=(h, h), weight=rng.normal(0.2, 0.8, (4, 1, 3, 3)), stride=1, padding=2,
                           dilation=2, groups=2, bias=rng.normal(0.0, 0.1, 4)),
        "thr": nir.Threshold(threshold=np.full(s1, 0.6)),
        "d3": nir.Delay(delay=np.full(s1, 3 * DT)),
        "dw": nir.Conv2d(input_shape=(h, h), weight=rng.normal(0.3, 0.6, (4, 1, 3, 3)), stride=2, padding=1,
                         dilation=1, groups=4, bias=np.zeros(4)),
        "lif": nir.LIF(tau=np.full(s2, 3e-3), r=np.ones(s2), v_leak=np.zeros(s2), v_threshold=np.full(s2, 0.5),
                       v_reset=np.zeros(s2)),
        "flat": nir.Flatten(input_type={"input": np.array(s2)}, start_dim=0, end_dim=-1),
        "fc": nir.Affine(weight=rng.normal(0.0, 0.4, (8, 100)), bias=np.zeros(8)),
        "thr2": nir.Threshold(threshold=np.full(8, low)),
        "d2": nir.Delay(delay=np.full(8, 2 * DT)),
        "fc2": nir.Linear(weight=rng.normal(0.2, 0.8, (6, 8))),
        "if": nir.IF(r=np.full(6, 1 / DT), v_threshold=np.full(6, 1.0), v_reset=np.zeros(6)),
        "drec": nir.Delay(delay=np.full(6, 2 * DT)),
        "rec": nir.Affine(weight=rng.normal(0.0, 0.6, (6, 6)), bias=np.zeros(6)),
        "output": nir.Output(output_type=np.array([6])),
    }
    edges = [("input", "conv"), ("conv", "thr"), ("thr", "d3"), ("d3", "dw"), ("dw", "lif"), ("lif", "flat"),
             ("flat", "fc"), ("fc", "thr2"), ("thr2", "d2"), ("d2", "fc2"), ("fc2", "if"), ("if", "output"),
             ("if", "drec"), ("drec", "rec"), ("rec", "if")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _spikes(rng, batch, steps):
    return (rng.random((batch, steps, 2, 9, 9)) < 0.3).astype(np.float64)


def _check(got, want, batch):
    for pop in POPS:
        w = want[pop][:, :batch]
        assert w.sum() >= 5 and w.mean() < 0.8, pop  # active, not saturated: the comparison means something
        np.testing.assert_array_equal(got[pop], w.astype(np.uint8), err_msg=pop)


@pytest.mark.parametrize("run", [torch_backend.run, numba_sim.run], ids=["torch", "numba"])
def test_threshold_delays_and_grouped_convs_match_the_oracle(rng, run):
    ng = new_nodes_graph(rng)
    g = from_nir(ng, dt=DT, encoding="spike")
    # Threshold: a memoryless LIF; Delays: delayed edges (a cycle through a 2-step Delay: 2 + 1 steps)
    assert g.op("thr").params.memoryless and g.op("thr").params.v_th == np.nextafter(0.6, np.inf)
    assert [(p.src, p.delay) for p in g.inputs("dw")] == [("thr", 3)]
    assert [(p.src, p.delay) for p in g.inputs("if")] == [("fc2", 0), ("rec", 1)]
    assert [(p.src, p.delay) for p in g.inputs("rec")] == [("if", 2)]
    assert (g.op("conv").dilation, g.op("conv").groups, g.op("dw").groups) == ((2, 2), 2, 4)
    x = _spikes(rng, 3, 16)
    want = simulate(ng, x, DT, record=POPS)
    res = run(g, x, 16, record=True)
    _check(res.trains, want, 3)


def test_threshold_delays_and_grouped_convs_on_lava_float(rng):
    from lavatest import require_lava
    lb, _ = require_lava()
    ng = new_nodes_graph(rng, low=0.1)
    g = from_nir(ng, dt=DT, encoding="spike")
    x = _spikes(rng, 2, 12)
    _check(lb.run(g, x, 12, record=True).trains, simulate(ng, x, DT, record=POPS), 2)
    with pytest.raises(lb.LoweringError, match="node 'thr': a memoryless LIF .* fixed point; Lava's 12-bit dv"):
        lb.lower(g, lb.Options(fixed_point=True))
    low = from_nir(new_nodes_graph(rng, low=-0.2), dt=DT, encoding="spike")  # fires without input
    with pytest.raises(lb.LoweringError, match="node 'thr2' .*threshold is at or below its resting potential"):
        lb.lower(low)


def test_threshold_fires_only_above_its_threshold():
    """NIR's Threshold is x > threshold: an input exactly at the threshold does not fire, the next float does."""
    thr = np.array([0.5, 0.5, -0.25, 0.0])
    ng = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([4])), "fc": nir.Linear(weight=np.eye(4)),
                             "t": nir.Threshold(threshold=thr), "output": nir.Output(output_type=np.array([4]))},
                      edges=[("input", "fc"), ("fc", "t"), ("t", "output")])
    g = from_nir(ng, dt=DT)
    x = np.array([[0.5, np.nextafter(0.5, 1), -0.25, 0.0], [0.4, 0.6, np.nextafter(-0.25, 0), 5e-324]])
    for run in (torch_backend.run, numba_sim.run):
        assert run(g, x, 3).output.tolist() == [[0, 3, 0, 0], [0, 3, 3, 3]]


def test_new_nodes_export_to_nir_and_back(rng, tmp_path):
    """The imported graph written as NIR again: Threshold nodes, Delay nodes of the extra steps,
    dilation/groups; NIR's own type checks pass, the oracle on the export and the re-import give
    the same spikes."""
    ng = new_nodes_graph(rng)
    g = from_nir(ng, dt=DT, encoding="spike")
    out = to_nir(g, dt=DT)
    kinds = {n: type(m).__name__ for n, m in out.nodes.items()}
    assert kinds["thr"] == kinds["thr2"] == "Threshold"
    assert kinds["dw.delay0"] == kinds["fc2.delay0"] == kinds["rec.delay0"] == "Delay"
    assert round(float(out.nodes["dw.delay0"].delay.reshape(-1)[0]) / DT) == 3
    assert (out.nodes["conv"].dilation, out.nodes["conv"].groups) == ((2, 2), 2)
    assert ("rec", "if") in out.edges and ("if", "rec.delay0") in out.edges  # the cycle: 1 step + a 1-step Delay
    with pytest.raises(ValueError, match="type mismatch"):  # nir 1.0.8's own check rejects grouped convs:
        nir.NIRGraph(nodes=out.nodes, edges=out.edges)       # the export is built without it
    write_nir(g, tmp_path / "new.nir", dt=DT)
    assert from_nir(tmp_path / "new.nir", name="nir").summary() == from_nir(out).summary()
    x = _spikes(rng, 2, 14)
    want = simulate(out, x, DT, record=POPS)
    back = from_nir(out)
    for graph in (g, back):
        _check(torch_backend.run(graph, x, 14, record=True).trains, want, 2)
    assert [(p.src, p.delay) for p in back.inputs("rec")] == [("if", 2)]


def test_delayed_edges_export_and_refusals(rng):
    """A feed-forward delayed edge into a synapse becomes a Delay node (it used to be refused); a cycle
    NIR would close on a same-step edge and a memoryless LIF resting off zero are refused."""
    g = SpikeGraph("ff")
    g.add("x", Input((3,), encoding="spike"))
    g.add("fc", Dense(rng.normal(0.5, 1.0, (4, 3))), [Port("x", 4)])
    g.add("n", Neuron(NeuronParams("if", v_th=0.7)), ["fc"])
    g.add("out", Readout(), ["n"])
    out = to_nir(g, dt=DT)
    assert type(out.nodes["fc.delay0"]).__name__ == "Delay"
    x = (rng.random((2, 12, 3)) < 0.5).astype(np.float64)
    np.testing.assert_array_equal(simulate(out, x, DT, record=("n",))["n"].astype(np.uint8),
                                  torch_backend.run(g, x, 12, record=True).trains["n"])
    cyc = SpikeGraph("cyc")
    cyc.add("x", Input((3,), encoding="spike"))
    cyc.add("fc", Dense(np.ones((3, 3))), ["x"])
    cyc.add("n", Neuron(NeuronParams("if")), ["fc"])
    cyc.add("r", Dense(np.ones((3, 3))), [Port("n", 0)])
    cyc.add("r2", Dense(np.ones((3, 3))), ["r"])
    cyc.connect("r2", "n", 1)
    cyc.add("out", Readout(), ["n"])
    to_nir(cyc)  # the cycle closes into the population: fine
    # a cycle that NIR's reading (the first edge back to a node on a depth-first path from the input) would
    # close on a same-step edge: m is reached before n, so r -> m would become the cycle's one-step edge
    cyc2 = SpikeGraph("cyc2")
    cyc2.add("x", Input((3,), encoding="spike"))
    cyc2.add("fc2", Dense(np.ones((3, 3))), ["x"])
    cyc2.add("fc", Dense(np.ones((3, 3))), ["x"])
    cyc2.add("n", Neuron(NeuronParams("if")), ["fc"])
    cyc2.add("r", Dense(np.ones((3, 3))), ["n"])
    cyc2.add("m", Neuron(NeuronParams("if")), ["fc2", "r"])
    cyc2.add("r2", Dense(np.ones((3, 3))), ["m"])
    cyc2.connect("r2", "n", 1)
    cyc2.add("out", Readout(), ["m"])
    with pytest.raises(NIRExportError, match="node 'm': its input from 'r' closes a cycle .* a same-step edge"):
        to_nir(cyc2)
    mem = SpikeGraph("mem")
    mem.add("x", Input((3,)))
    mem.add("fc", Dense(np.ones((3, 3))), ["x"])
    mem.add("n", Neuron(NeuronParams("lif", tau=1.0, v_th=0.5, v_reset=0.2)), ["fc"])
    mem.add("out", Readout(), ["n"])
    with pytest.raises(NIRExportError, match="node 'n' .*memoryless LIF .*v_reset != 0"):
        to_nir(mem)
