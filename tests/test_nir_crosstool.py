"""Cross-tool proof: networks exported by snnTorch's and Norse's own NIR exporters, imported by snncc,
give those tools' own forward spike trains exactly (torch and numba); snncc -> NIR -> snnTorch's
import_from_nir reproduces snncc's spikes where snnTorch's importer is correct, and a test records
where it is not. Pinned in requirements/test.txt (installed by `make setup`)."""
import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")
snn = pytest.importorskip("snntorch")
pytest.importorskip("norse")

from snntorch import utils as snn_utils  # noqa: E402
from snntorch.export_nir import export_to_nir  # noqa: E402
from snntorch.import_nir import import_from_nir  # noqa: E402

from snncc.backends import torch_ref as torch_backend  # noqa: E402
from snncc.nir import NIRImportError, from_nir, write_nir  # noqa: E402
from snncc.sims import numba_sim  # noqa: E402

SNNTORCH_DT = 1e-4  # fixed in snnTorch's exporter, not stored in its files
RUNS = [torch_backend.run, numba_sim.run]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _leaky(shape, output=False):
    """reset to zero, per-neuron beta (snnTorch's exporter needs per-neuron beta and threshold tensors)."""
    return snn.Leaky(beta=torch.rand(shape) * 0.5 + 0.45, threshold=torch.ones(shape), init_hidden=True,
                     reset_mechanism="zero", output=output)


def _assert_spikes_on_every_backend(g, x, T, expected):
    """Each backend's integer spike trains of the populations in ``expected`` ({population: trains}) equal them."""
    for run in RUNS:
        res = run(g, x, T, record=True)
        for pop, want in expected.items():
            np.testing.assert_array_equal(res.trains[pop], want.astype(np.uint8), err_msg=f"{run.__module__}: {pop}")


def _forward(net, x, hidden=()):
    """snnTorch's own forward, step by step; x: (B, T, ...). Returns {name: (T, B, ...) spikes}."""
    snn_utils.reset(net)
    recs = {name: [] for name in hidden}
    hooks = [net[i].register_forward_hook(lambda m, a, o, name=name: recs[name].append(o.detach().clone()))
             for name, i in hidden.items()] if hidden else []
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            spk, _ = net(x[:, t])
            outs.append(spk)
    for h in hooks:
        h.remove()
    out = {k: torch.stack(v).numpy() for k, v in recs.items()}
    out["out"] = torch.stack(outs).numpy()
    return out


def _via_file(graph, tmp_path, name):
    path = tmp_path / f"{name}.nir"
    nir.write(path, graph)
    return path


def test_snntorch_linear_leaky_spikes_exactly(tmp_path):
    net = torch.nn.Sequential(torch.nn.Linear(20, 12), _leaky(12), torch.nn.Linear(12, 5), _leaky(5, output=True))
    with torch.no_grad():
        net[0].weight.mul_(4)
        net[2].weight.mul_(5)
    path = _via_file(export_to_nir(net, torch.zeros(1, 20), ignore_dims=[0]), tmp_path, "mlp")
    g = from_nir(path, dt=SNNTORCH_DT, encoding="spike")
    x = (torch.rand(8, 30, 20) < 0.4).float()
    want = _forward(net, x, hidden={"hid": 1})
    assert want["hid"].sum() > 100 and want["out"].sum() > 20
    p_hid, p_out = g.populations()
    _assert_spikes_on_every_backend(g, x.numpy(), 30, {p_hid: want["hid"], p_out: want["out"]})
    # direct (analog) input: the same current at every step
    xa = torch.rand(8, 20)
    want = _forward(net, xa[:, None].expand(8, 30, 20))
    g = from_nir(path, dt=SNNTORCH_DT, encoding="direct")
    _assert_spikes_on_every_backend(g, xa.numpy(), 30, {p_out: want["out"]})


def test_snntorch_conv_leaky_avgpool_linear_spikes_exactly(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), _leaky((4, 6, 6)), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                              torch.nn.Linear(36, 5), _leaky(5, output=True))
    with torch.no_grad():
        net[0].weight.mul_(3)
        net[4].weight.mul_(6)
    ng = export_to_nir(net, torch.zeros(1, 1, 8, 8), ignore_dims=[0])
    assert [type(n).__name__ for n in ng.nodes.values()] == \
        ["Input", "Conv2d", "LIF", "AvgPool2d", "Flatten", "Affine", "LIF", "Output"]
    g = from_nir(_via_file(ng, tmp_path, "conv"), dt=SNNTORCH_DT, encoding="spike")
    x = (torch.rand(6, 20, 1, 8, 8) < 0.5).float()
    want = _forward(net, x, hidden={"hid": 1})
    assert want["hid"].sum() > 500 and want["out"].sum() > 20
    p_hid, p_out = g.populations()
    _assert_spikes_on_every_backend(g, x.numpy(), 20, {p_hid: want["hid"], p_out: want["out"]})


def _norse_net(n_in=10, n=6):
    import norse.torch as nt
    from norse.torch.functional.lif_box import LIFBoxParameters
    from norse.torch.module.lif_box import LIFBoxCell
    p = LIFBoxParameters(tau_mem_inv=torch.rand(n) * 100 + 50, v_th=torch.rand(n) * 0.5 + 0.5,
                         v_leak=torch.zeros(n), v_reset=torch.zeros(n))
    m = nt.SequentialState(torch.nn.Linear(n_in, n), LIFBoxCell(p))
    with torch.no_grad():
        m[0].weight.mul_(20)
    return m, nt


def test_norse_lif_spikes_exactly(tmp_path):
    """Norse 1.1.0 writes tau = dt / tau_mem_inv (dt times the real time constant), so its files
    describe Norse's dynamics at the step dt**2: imported with dt = 1e-6 they give Norse's own
    spikes (Norse's default step is 1e-3); at dt = 1e-3 the file's tau is below dt and is refused."""
    m, nt = _norse_net()
    path = _via_file(nt.to_nir(m, torch.zeros(10)), tmp_path, "norse")
    x = (torch.rand(30, 4, 10) < 0.4).float()
    outs, state = [], None
    with torch.no_grad():
        for t in range(30):
            o, state = m(x[t], state)
            outs.append(o)
    want = torch.stack(outs).numpy()
    assert want.sum() > 30
    g = from_nir(path, dt=1e-3 ** 2, encoding="spike")
    _assert_spikes_on_every_backend(g, x.transpose(0, 1).numpy(), 30, {g.populations()[0]: want})
    with pytest.raises(NIRImportError, match="node '1' \\(LIF\\): tau must exceed dt=0.001"):
        from_nir(path, dt=1e-3)


def _snncc_mlp(rng, v_th=None, tau=None):
    from snncc.ir.graph import SpikeGraph
    from snncc.ir.ops import Dense, Input, Neuron, Readout
    from snncc.neuron import NeuronParams
    g = SpikeGraph("mlp")
    g.add("x", Input((16,), encoding="spike"))
    g.add("fc0", Dense(rng.normal(0, 1.2, (10, 16)).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32)),
          ["x"])
    g.add("lif0", Neuron(NeuronParams("lif", tau=4.0, v_th=0.5), tau=tau), ["fc0"])
    g.add("fc1", Dense(rng.normal(0, 1.5, (4, 10)).astype(np.float32), np.zeros(4, np.float32)), ["lif0"])
    g.add("lif1", Neuron(NeuronParams("lif", tau=4.0, v_th=0.5)), ["fc1"])
    g.add("out", Readout(), ["lif1"])
    return g


def _snntorch_spikes(path, x):
    net = import_from_nir(nir.read(path))
    snn_utils.reset(net)
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            outs.append(net(torch.as_tensor(x[:, t], dtype=torch.float32)))
    out = outs[-1]
    return torch.stack([o[0] if isinstance(o, tuple) else o for o in outs]).numpy() if out is not None else None


def test_snncc_to_nir_to_snntorch_reproduces_snncc_spikes(rng, tmp_path):
    """Homogeneous populations: snnTorch's importer rescales thresholds by r*dt/tau, which is exact here."""
    g = _snncc_mlp(rng)
    path = tmp_path / "mlp.nir"
    write_nir(g, path, dt=SNNTORCH_DT)
    x = (rng.random((6, 25, 16)) < 0.5).astype(np.float64)
    want = torch_backend.run(g, x, 25, record=True).trains["lif1"]
    assert want.sum() > 20
    np.testing.assert_array_equal(_snntorch_spikes(path, x).astype(np.uint8), want)


def test_snntorch_importer_is_wrong_for_per_neuron_time_constants(rng, tmp_path):
    """snnTorch 1.0.0's import_from_nir divides every threshold by the FIRST neuron's r*dt/tau
    (`np.unique(w_scale)[0]`), so a population with per-neuron tau gets other spikes than the file
    describes (snncc, which follows the file, and the Euler oracle agree)."""
    from nir_oracle import simulate
    g = _snncc_mlp(rng, tau=rng.uniform(2.0, 8.0, 10))
    path = tmp_path / "het.nir"
    write_nir(g, path, dt=SNNTORCH_DT)
    x = (rng.random((6, 25, 16)) < 0.5).astype(np.float64)
    want = torch_backend.run(g, x, 25, record=True).trains["lif1"]
    oracle = simulate(nir.read(path), x, SNNTORCH_DT)["out"]
    np.testing.assert_array_equal(oracle.astype(np.uint8), want)
    assert not np.array_equal(_snntorch_spikes(path, x).astype(np.uint8), want)


def test_snntorch_homogeneous_net_on_lava_float_spikes_exactly(tmp_path):
    """All-equal beta and threshold import as scalar parameters, which the Lava lowering takes."""
    from lavatest import require_lava
    lb, _ = require_lava()
    net = torch.nn.Sequential(torch.nn.Linear(20, 12), snn.Leaky(beta=torch.full((12,), 0.8), threshold=torch.ones(12),
                                                                 init_hidden=True, reset_mechanism="zero"),
                              torch.nn.Linear(12, 5), snn.Leaky(beta=torch.full((5,), 0.8), threshold=torch.ones(5),
                                                                init_hidden=True, reset_mechanism="zero", output=True))
    with torch.no_grad():
        net[0].weight.mul_(4)
        net[2].weight.mul_(5)
    g = from_nir(export_to_nir(net, torch.zeros(1, 20), ignore_dims=[0]), dt=SNNTORCH_DT, encoding="spike")
    assert not any(g.op(p).heterogeneous for p in g.populations())
    x = (torch.rand(4, 30, 20) < 0.4).float()
    want = _forward(net, x, hidden={"hid": 1})
    got = lb.run(g, x.numpy(), 30, record=True)
    p_hid, p_out = g.populations()
    assert want["out"].sum() > 20
    np.testing.assert_array_equal(got.trains[p_hid], want["hid"].astype(np.uint8))
    np.testing.assert_array_equal(got.trains[p_out], want["out"].astype(np.uint8))


def test_snntorch_rleaky_file_imports_as_a_delayed_cycle(tmp_path):
    """snnTorch's RLeaky exports as LIF <-> Affine (a cycle): snncc closes it through a delayed edge and follows
    the file exactly (the Euler oracle). snnTorch's own RLeaky forward with reset to zero differs from its file:
    it multiplies the whole next step's state, input included, by (1 - spike) (a one-step refractory period)."""
    from nir_oracle import simulate
    net = torch.nn.Sequential(torch.nn.Linear(10, 6), snn.RLeaky(beta=torch.rand(6) * 0.5 + 0.4, threshold=torch.ones(6),
                                                                 linear_features=6, init_hidden=True,
                                                                 reset_mechanism="zero", output=True))
    with torch.no_grad():
        net[0].weight.mul_(3)
    ng = nir.read(_via_file(export_to_nir(net, torch.zeros(1, 10), ignore_dims=[0]), tmp_path, "rleaky"))
    g = from_nir(ng, dt=SNNTORCH_DT, encoding="spike")
    (pop,) = g.populations()
    assert [p.delay for p in g.inputs(pop)] == [0, 1]
    x = (torch.rand(4, 25, 10) < 0.4).float()
    oracle = simulate(ng, x.numpy(), SNNTORCH_DT, record=(pop,))[pop].astype(np.uint8)
    assert oracle.sum() > 20
    for run in RUNS:
        np.testing.assert_array_equal(run(g, x.numpy(), 25, record=True).trains[pop], oracle)
    assert not np.array_equal(_forward(net, x)["out"].astype(np.uint8), oracle)
