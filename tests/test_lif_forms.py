"""The LIF without input decay (MSKD eq. 1, spikingjelly ``decay_input=False``) and the current-based LIF in
the training layer: closed forms, the producing library's own forward pass, every backend's integer spike
trains, the MSKD students, and files written before the field existed."""
import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

from lavatest import require_lava
from snncc import neuron as nrn
from snncc.backends import torch_ref
from snncc.export import export
from snncc.ir import serialize
from snncc.ir.ops import Input
from snncc.models.layers import SpikingNeuron, TimeDistributed
from snncc.neuron import NeuronParams
from snncc.passes.validate import check_fully_spiking
from snncc.sims import numba_sim

lb, lf = require_lava()

# thresholds a little off the dyadic grid the membranes live on (weights and inputs on 1/16, decays 1/2
# and 3/4 over <= 8 steps: multiples of 2^-20), so no membrane ties with them in any precision
OFF_GRID = 2.0 ** -22


def dyadic_(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randint(-5, 9, p.shape, generator=g).float() / 16
    return module


def spike_input(shape, T, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, *shape, generator=g) < 0.4).float()


def as_spike_input(g):
    """The exported graph with its input spike-encoded (one binary frame per step, as fed to the module)."""
    (inp,) = g.input_nodes
    g.replace_op(inp, Input(g.type_of(inp).shape, "spike"))
    return g


def backend_trains(g, x, T, fixed=True):
    """{backend: {population: (T, B, n) uint8}} for torch, numba, Lava float and (if ``fixed``) Lava fixed point."""
    runs = {"torch": torch_ref.run(g, x, T, record=True), "numba": numba_sim.run(g, x, T, record=True),
            "lava-float": lb.run(g, x, T, record=True)}
    if fixed:
        plan = lb.lower(g, lb.Options(fixed_point=True))
        runs["lava-fixed"] = lb.run((g, plan), x, T, record=True)
        runs["integer-reference"] = lf.run_integer(g, x, T, plan=plan, record=True)
    return {k: {n: np.asarray(r.trains[n]).astype(np.int64) for n in g.populations()} for k, r in runs.items()}


def record_spikes(net, xs):
    """spikingjelly's own forward (multi-step): every LIFNode's output spikes (T, B, n) as integers."""
    out = {}
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name, o.detach()))
             for name, m in net.named_modules() if isinstance(m, neuron.LIFNode)]
    functional.reset_net(net)
    with torch.no_grad():
        net(xs)
    for h in hooks:
        h.remove()
    return {name: o.numpy().astype(np.int64) for name, o in out.items()}


# ---------------------------------------------------------------- the neuron itself
def test_no_input_decay_is_mskd_eq1_as_written():
    """u[t] = alpha u[t-1] (1 - z[t-1]) + I[t], z[t] = H(u[t] - V_th), written out with numpy, against nrn.step."""
    alpha, v_th = 0.2, 0.5
    p = NeuronParams.from_decay(alpha, v_th)
    assert (p.tau, p.decay_input, p.reset, p.v_reset) == (1.25, False, "hard", 0.0)
    assert p.decay == pytest.approx(alpha, abs=1e-15) and p.input_gain == 1.0
    rng = np.random.default_rng(0)
    current = rng.uniform(-0.2, 0.6, (40, 7))
    u, z = np.zeros(7), np.zeros(7)
    v, spikes = np.float64(p.v_rest), 0
    for t in range(40):
        u = alpha * u * (1 - z) + current[t]
        z = (u >= v_th).astype(float)
        s, v = nrn.step(v, current[t], *p.scalars())
        np.testing.assert_array_equal(s, z)
        np.testing.assert_allclose(np.where(z > 0, u, v), u, rtol=1e-12)  # before the reset, h is u
        spikes += int(z.sum())
    assert 20 < spikes < 200


def test_no_input_decay_needs_the_leaky_model():
    with pytest.raises(ValueError, match="decay_input=False is a form of the leaky model"):
        NeuronParams("if", v_th=1.0, decay_input=False)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\)"):
        NeuronParams.from_decay(1.0, 0.5)


# ---------------------------------------------------------------- spikingjelly's LIFNode(decay_input=False)
@pytest.mark.parametrize("reset", ["hard", "v_reset=None"])
def test_spikingjelly_no_input_decay_matches_every_backend(reset):
    hard = reset == "hard"
    kw = [dict(v_reset=0.0), dict(v_reset=-0.25)] if hard else [dict(v_reset=None)] * 2
    net = dyadic_(nn.Sequential(
        layer.Linear(16, 12), neuron.LIFNode(tau=2.0, decay_input=False, v_threshold=0.5 + OFF_GRID, **kw[0]),
        layer.Linear(12, 5), neuron.LIFNode(tau=4.0, decay_input=False, v_threshold=0.25 + OFF_GRID, **kw[1])))
    functional.set_step_mode(net, "m")
    T, B = 8, 6
    xs = spike_input((B, 16), T)
    want = record_spikes(net, xs)
    g = as_spike_input(export(net, xs))
    pops = g.populations()
    assert [g.op(n).params.decay_input for n in pops] == [False, False]
    assert [g.op(n).params.reset for n in pops] == ["hard" if hard else "soft"] * 2
    x = xs.numpy().transpose(1, 0, 2)  # (B, T, n): a spike-encoded input's layout
    if not hard:  # Lava's LIF resets to 0: soft reset is refused by node
        with pytest.raises(lb.LoweringError, match=f"node '{pops[0]}'.*soft reset"):
            lb.lower(g)
    got = backend_trains(g, x, T, fixed=hard) if hard else {
        "torch": {n: torch_ref.run(g, x, T, record=True).trains[n].astype(np.int64) for n in pops},
        "numba": {n: numba_sim.run(g, x, T, record=True).trains[n].astype(np.int64) for n in pops}}
    for sj_name, pop in zip(want, pops):
        assert 0.05 < want[sj_name].mean() < 0.8, sj_name  # the comparison is not vacuous
        for backend, trains in got.items():
            np.testing.assert_array_equal(trains[pop], want[sj_name], err_msg=f"{backend}/{pop}")


def test_other_lif_variants_are_still_refused_by_name():
    from snncc.export import ExportError
    with pytest.raises(ExportError, match="unsupported spikingjelly neuron LIAFNode"):
        export(nn.Sequential(nn.Linear(3, 3), neuron.LIAFNode(act=nn.ReLU(), threshold_related=False)),
               torch.zeros(1, 3))


# ---------------------------------------------------------------- CUBA in the training layer
def test_cuba_training_layer_is_the_closed_form():
    """J[t] = sum_k (1 - 1/tau_syn)^(t-k) x[k] / tau_syn; the membrane then follows nrn.charge/fire/reset of J."""
    p = NeuronParams("lif", tau=2.0, v_th=0.4, tau_syn=4.0)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(10, 3, 6, generator=g, dtype=torch.float64)
    t = torch.arange(10, dtype=torch.float64)
    kernel = torch.where(t[:, None] >= t[None, :], 0.75 ** (t[:, None] - t[None, :]), torch.zeros(()))
    current = torch.einsum("tk,kbn->tbn", kernel, x) / 4.0
    v, want = torch.zeros(3, 6, dtype=torch.float64), []
    for k in range(10):
        h = v + (current[k] - v) / 2.0
        s = (h >= 0.4).double()
        want.append(s)
        v = h * (1 - s)
    got = SpikingNeuron(p, "sigmoid")(x)
    assert torch.equal(got, torch.stack(want)) and 0.1 < got.mean() < 0.9
    xg = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(SpikingNeuron(p, "sigmoid")(xg)[-1].sum(), xg)
    assert grad[0].abs().sum() > 0  # the gradient reaches back through the synaptic current


@pytest.mark.parametrize("decay_input", [True, False])
def test_cuba_training_net_exports_and_runs_alike_everywhere(decay_input):
    """A TimeDistributed(Linear) -> CUBA layer -> Linear -> LIF net: the module's spikes == torch, numba,
    Lava float and Lava fixed point (== the integer reference), population by population."""
    gain = 1.0 if decay_input else 2.0  # without input decay the same currents charge tau = 2 times more
    cuba = NeuronParams("lif", tau=2.0, v_th=0.25 * gain + OFF_GRID, tau_syn=2.0, decay_input=decay_input)
    lif = NeuronParams("lif", tau=2.0, v_th=0.125 * gain + OFF_GRID, decay_input=decay_input)
    net = dyadic_(nn.Sequential(TimeDistributed(nn.Linear(16, 12, bias=False)), SpikingNeuron(cuba),
                                TimeDistributed(nn.Linear(12, 5, bias=False)), SpikingNeuron(lif)), seed=3)
    T, B = 8, 5
    xs = spike_input((B, 16), T, seed=4)
    hidden = {}
    net[1].register_forward_hook(lambda m, i, o: hidden.__setitem__("cuba", o))
    with torch.no_grad():
        out = net(xs)
    want = [hidden["cuba"].numpy().astype(np.int64), out.numpy().astype(np.int64)]
    g = as_spike_input(export(net, xs))
    pops = g.populations()
    assert g.op(pops[0]).params == cuba and g.op(pops[0]).current_based
    got = backend_trains(g, xs.numpy().transpose(1, 0, 2), T)
    for w, pop in zip(want, pops):
        assert 0.05 < w.mean() < 0.8, pop
        for backend, trains in got.items():
            np.testing.assert_array_equal(trains[pop], w, err_msg=f"{backend}/{pop}")


# ---------------------------------------------------------------- MSKD students with the paper's neuron
@pytest.mark.parametrize("model", ["spike-resnet18", "sew-resnet18", "ms-resnet18"])
def test_mskd_student_with_the_paper_neuron_exports_and_runs_spike_exact(model):
    from test_resnet import SHAPE, T, calibrate
    from snncc.training.mskd_config import MSKDConfig, build_student
    torch.manual_seed(0)
    m = build_student(MSKDConfig(method="direct", model=model, dataset="mnist", width=0.25, timesteps=T))
    sn = [mod for mod in m.modules() if isinstance(mod, SpikingNeuron)]
    assert sn and all(s.params == NeuronParams.from_decay(0.2, 0.5) for s in sn)
    m = calibrate(m.double())
    x = torch.rand(4, *SHAPE, dtype=torch.float64)
    with torch.no_grad():
        out = m(m.encode(x))
    g = export(m, torch.zeros(T, 1, *SHAPE, dtype=torch.float64), timesteps=T)
    assert check_fully_spiking(g).fully_spiking == (model == "spike-resnet18")
    g = serialize.loads(serialize.to_onnx(g).SerializeToString())  # through the file format
    assert {g.op(n).params.decay_input for n in g.populations()} == {False}
    a, b = torch_ref.run(g, x.numpy(), T, record=True), numba_sim.run(g, x.numpy(), T, record=True)
    assert sum(int(a.trains[n].sum()) for n in g.populations()) > 100
    for n in g.populations():
        np.testing.assert_array_equal(a.trains[n], b.trains[n], err_msg=n)
    if m.readout == "spike":
        np.testing.assert_array_equal(a.output, out.sum(0).numpy())
        assert 3 < a.output.sum() < a.output.size * T
    else:
        np.testing.assert_allclose(a.output, out.mean(0).numpy(), rtol=1e-9, atol=1e-9)


def test_mskd_config_lif_forms_and_old_checkpoints():
    from snncc.training.mskd_config import MSKDConfig, MSKDConfigError, neuron_params
    assert neuron_params(MSKDConfig()) == NeuronParams.from_decay(0.2, 0.5)
    assert neuron_params(MSKDConfig(lif_form="bsd")) == NeuronParams("lif", 2.0, 0.5)
    assert neuron_params(MSKDConfig(lif_form="paper", tau=5.0)).decay == pytest.approx(0.8)
    old = MSKDConfig(lif_form="bsd", tau=2.0).to_dict()
    del old["lif_form"]  # a checkpoint written before the paper's neuron existed trained BSD's
    assert MSKDConfig.from_dict(old).lif_form == "bsd"
    with pytest.raises(MSKDConfigError, match="lif_form"):
        MSKDConfig(lif_form="eq1").validate()


# ---------------------------------------------------------------- the file format
def _lif_graph(params):
    from snncc.ir.graph import SpikeGraph
    from snncc.ir.ops import Dense, Neuron, Readout
    g = SpikeGraph("f")
    g.add("x", Input((3,), "spike"))
    g.add("fc", Dense(np.full((2, 3), 0.5)), ["x"])
    g.add("pop", Neuron(params), ["fc"])
    g.add("out", Readout(), ["pop"])
    return g


def test_files_without_decay_input_read_as_decay_input_true():
    model = serialize.to_onnx(_lif_graph(NeuronParams.from_decay(0.2, 0.5)))
    node = next(n for n in model.graph.node if n.name == "pop")
    (attr,) = [a for a in node.attribute if a.name == "params.decay_input"]
    assert attr.i == 0
    assert serialize.loads(model.SerializeToString()).op("pop").params.decay_input is False
    node.attribute.remove(attr)  # what snncc wrote before the field existed
    assert serialize.loads(model.SerializeToString()).op("pop").params == NeuronParams("lif", 1.25, 0.5)
    attr.i = 2
    node.attribute.append(attr)
    with pytest.raises(serialize.SerializeError,
                       match="node 'pop' attribute 'params.decay_input': expected an INT 0 or 1"):
        serialize.loads(model.SerializeToString())


# ---------------------------------------------------------------- the CLI
@pytest.mark.parametrize("form, decay_input", [(None, False), ("bsd", True)])
def test_cli_lif_form_trains_and_exports_the_chosen_neuron(form, decay_input, shared_data, tmp_path):
    from click.testing import CliRunner
    from snncc.cli import main

    def invoke(*args):
        return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])
    run = tmp_path / "run"
    res = invoke("train", "--method", "direct", "--model", "spike-resnet18", "--dataset", "mnist", "--data-dir",
                 shared_data, "--epochs", 1, "--timesteps", 2, "--train-samples", 64, "--test-samples", 32,
                 "--batch-size", 32, "--width", 0.125, "--quiet", "--out", run, *(["--lif-form", form] if form else []))
    assert res.exit_code == 0, res.stderr
    res = invoke("export", run / "model.pt", "-o", tmp_path / "g.snn.onnx")
    assert res.exit_code == 0, res.stderr
    g = serialize.load(tmp_path / "g.snn.onnx")
    assert {(g.op(n).params.decay_input, g.op(n).params.tau) for n in g.populations()} == \
        {(decay_input, 2.0 if decay_input else 1.25)}
    res = invoke("train", "--method", "bsd", "--lif-form", "paper", "--out", tmp_path / "r")
    assert res.exit_code == 2 and "--lif-form applies to the ResNet methods" in res.stderr
    assert not (tmp_path / "r").exists()


def test_lava_fixed_cuba_input_bound_keeps_the_current_from_wrapping():
    """u sums up to 4096/(du + 1) steps of input: the per-step input bound shrinks by that factor, and a scale that
    breaks it is refused naming the population, the bound and du."""
    g = _lif_graph(NeuronParams("lif", tau=2.0, v_th=0.5, tau_syn=4.0, decay_input=False))
    g.replace_op("fc", type(g.op("fc"))(np.full((2, 3), 8.0)))   # worst-case current 24, / tau_syn = 6 per step
    assert lf.lower_fixed(g, scale_exp={"pop": 12}).fixed.pops["pop"].du == 1023   # 6 * 2^12 <= 32 * 1024 - 1
    with pytest.raises(lb.LoweringError, match=r"worst-case input current of population 'pop'.*\|a_in\| <= 32767 "
                                               r".*du = 1023"):
        lf.lower_fixed(g, scale_exp={"pop": 13})
    auto = lf.lower_fixed(g)
    assert auto.fixed.pops["pop"].k == 12   # the search's largest safe scale
