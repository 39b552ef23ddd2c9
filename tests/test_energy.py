"""Energy report: op counts from measured activity priced by a plug-in model, checked by hand-computed values."""
import json

import pytest
from graphs import mlp, residual

from snncc import energy
from snncc.backends import torch_ref as torch_backend
from snncc.energy import EnergyModel, Kundu, count_layers, energy_report, get_model
from snncc.energy.base import Constant


def _rows(rep):
    return [r.as_dict() for r in rep.layers]


def test_mlp_energy_matches_hand_computation(rng):
    g = mlp(rng)
    T, B = 6, 5
    res = torch_backend.run(g, rng.random((B, 1, 8, 8)), T, record=True)
    rep = energy_report(g, res.activity, B, T)
    fc0, fc1, fc2 = _rows(rep)
    # first layer: analog direct input -> MACs once per inference
    assert fc0["macs"] == 64 * 48 and fc0["sops"] == 0
    # hidden layers: FLOPs x spikes per presynaptic neuron per inference
    spikes0 = res.trains["lif0"].sum() / (48 * B)
    assert fc1["sops"] == pytest.approx(48 * 32 * spikes0) and fc1["macs"] == 0
    assert fc1["input_rate"] == pytest.approx(spikes0 / T)
    assert fc2["firing_rate"] == pytest.approx(res.trains["lif2"].mean())
    total = 4.6 * 64 * 48 + 0.9 * (fc1["sops"] + fc2["sops"])
    assert rep.total_energy_pj == pytest.approx(total)
    assert rep.ann_energy_pj == pytest.approx(4.6 * (64 * 48 + 48 * 32 + 32 * 10))
    assert rep.ann_over_snn == pytest.approx(rep.ann_energy_pj / total)
    d = json.loads(json.dumps(rep.as_dict()))  # the JSON the CLI writes
    assert d["total_energy_pj"] == pytest.approx(total) and d["breakdown"] == {"compute": pytest.approx(total)}
    assert d["constants"]["E_MAC"]["pj"] == 4.6 and "Horowitz" in d["constants"]["E_AC"]["source"]


def test_first_layer_per_step_flag(rng):
    g = mlp(rng)
    res = torch_backend.run(g, rng.random((2, 1, 8, 8)), 6)
    once = energy_report(g, res.activity, 2, 6).layers[0].counts.macs
    per_step = energy_report(g, res.activity, 2, 6, first_layer="per_step").layers[0].counts.macs
    assert per_step == 6 * once
    with pytest.raises(ValueError, match="first_layer"):
        energy_report(g, res.activity, 2, 6, first_layer="sometimes")


def test_conv_flops_and_hybrid_counts(rng):
    g = residual(rng, "sew")
    T, B = 4, 3
    res = torch_backend.run(g, rng.random((B, 2, 6, 6)), T)
    rows = {r["name"]: r for r in _rows(energy_report(g, res.activity, B, T))}
    assert rows["stem"]["flops"] == 3 * 3 * 6 * 6 * 2 * 4
    # the fc after the SEW add receives counts: ACs = FLOPs x counts per neuron (pooled)
    assert rows["fc"]["sops"] == pytest.approx(36 * 5 * res.activity["flat"] / (36 * B))
    g = residual(rng, "ms")
    res = torch_backend.run(g, rng.random((B, 2, 6, 6)), T)
    rows = {r["name"]: r for r in _rows(energy_report(g, res.activity, B, T))}
    assert rows["down"]["macs"] == rows["down"]["flops"] * T  # analog-input synapse: MACs every step
    assert rows["conv2"]["population"] is None and rows["conv2"]["firing_rate"] is None


def test_kundu_presets(rng):
    g = mlp(rng)
    res = torch_backend.run(g, rng.random((3, 1, 8, 8)), 6)
    counts = count_layers(g, res.activity, 3, 6)
    rep = energy_report(g, res.activity, 3, 6, get_model("kundu:int32-45nm"))
    want = sum(c.macs * 3.2 + c.sops * 0.1 for c in counts)
    assert rep.total_energy_pj == pytest.approx(want)
    assert rep.ann_energy_pj == pytest.approx(3.2 * sum(c.flops for c in counts))
    assert get_model("kundu").constants()["E_MAC"].value_pj == 4.6
    assert Kundu(2.0, 1.0).constants()["E_AC"].grade == "user"
    for bad in ("kundu:fp8", "nosuch"):
        with pytest.raises(ValueError, match="unknown"):
            get_model(bad)
    with pytest.raises(ValueError, match="finite"):
        Kundu(float("nan"), 1.0)


class _PerNeuronUpdate(EnergyModel):
    """A toy model written in a test: one class, one registry entry, nothing else touched."""

    name = "toy"

    def constants(self):
        return {"E_UPDATE": Constant(1.0, "test", "made up")}

    def layer_energy(self, c):
        return {"neuron updates": float(c.neurons) * (1.0 if c.population else 0.0)}

    def ann_layer_energy(self, c):
        return {"compute": float(c.flops)}


def test_adding_an_energy_model_touches_one_place(rng, monkeypatch):
    monkeypatch.setitem(energy.MODELS, "toy", _PerNeuronUpdate)
    g = mlp(rng)
    res = torch_backend.run(g, rng.random((2, 1, 8, 8)), 6)
    rep = energy_report(g, res.activity, 2, 6, get_model("toy"))
    assert rep.model == "toy" and rep.breakdown() == {"neuron updates": 48.0 + 32 + 10}
    assert rep.ann_energy_pj == 64 * 48 + 48 * 32 + 32 * 10


def test_grouped_dilated_conv_counts_macs_per_group(rng):
    """A conv with g groups does kh * kw * C_in / g MACs per output (a depthwise conv: kh * kw);
    dilation changes the output size only. Counted by hand, and its SOPs from the input spikes."""
    import numpy as np

    from snncc.ir.graph import SpikeGraph
    from snncc.ir.ops import Conv, Input, Neuron, Readout
    g = SpikeGraph("g")
    g.add("x", Input((4, 8, 8), encoding="spike"))
    g.add("c", Conv(rng.normal(0, 1, (8, 2, 3, 3)), None, (1, 1), (0, 0), (2, 2), groups=2), ["x"])  # 8x4x4
    g.add("n", Neuron(), ["c"])
    g.add("dw", Conv(rng.normal(0, 1, (8, 1, 3, 3)), None, (1, 1), (1, 1), groups=8), ["n"])  # depthwise 8x4x4
    g.add("m", Neuron(), ["dw"])
    g.add("out", Readout(), ["m"])
    T, B = 3, 2
    x = (rng.random((B, T, 4, 8, 8)) < 0.5).astype(np.float64)
    res = torch_backend.run(g, x, T)
    rows = {r.name: r for r in count_layers(g, res.activity, B, T)}
    assert rows["c"].flops == 3 * 3 * (4 // 2) * 8 * 4 * 4
    assert rows["dw"].flops == 3 * 3 * 1 * 8 * 4 * 4
    assert rows["c"].sops == pytest.approx(rows["c"].flops * x.sum() / (4 * 8 * 8 * B))


def test_graded_inputs_per_event_value_or_as_macs(rng):
    g = residual(rng, "sew")
    T, B = 4, 3
    res = torch_backend.run(g, rng.random((B, 2, 6, 6)), T)
    events = {r.counts.name: r.counts for r in energy_report(g, res.activity, B, T).layers}
    macs = {r.counts.name: r.counts for r in energy_report(g, res.activity, B, T, graded="mac").layers}
    # the fc reads pooled SEW ADD outputs (counts): per event value by default, dense MACs every step as syops
    assert events["fc"].input == "count" and events["fc"].sops > 0 and events["fc"].macs == 0
    assert macs["fc"].macs == macs["fc"].flops * T and macs["fc"].sops == 0
    assert macs["conv1"] == events["conv1"]   # binary inputs are unaffected
    assert energy_report(g, res.activity, B, T, graded="mac").conventions["graded"] == "mac"
    with pytest.raises(ValueError, match="graded"):
        count_layers(g, res.activity, B, T, graded="sometimes")


def _spiking_cnn():
    from spikingjelly.activation_based import neuron
    from torch import nn
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), neuron.LIFNode(tau=2.0, v_threshold=0.5), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), neuron.LIFNode(tau=2.0, v_threshold=0.25), nn.Flatten(),
        nn.Linear(6 * 4 * 4, 5), neuron.LIFNode(tau=2.0, v_threshold=0.25)), (8, 1, 8, 8), 1.0


def _grouped_cnn():
    from spikingjelly.activation_based import neuron
    from torch import nn
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=2, dilation=2, groups=2), neuron.LIFNode(tau=2.0, v_threshold=0.5),
        nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=4), neuron.LIFNode(tau=2.0, v_threshold=0.25), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 5), neuron.LIFNode(tau=2.0, v_threshold=0.25)), (8, 2, 8, 8), 1.0


def _sew_resnet():
    from test_export import TinyResNet
    return TinyResNet(sew=True), (8, 1, 4, 4), 4.0   # fc reads pooled SEW ADD counts: non-binary -> MACs


@pytest.mark.parametrize("build", [_spiking_cnn, _grouped_cnn, _sew_resnet])
def test_counts_match_an_independent_hook_counter_on_a_spikingjelly_network(build):
    """syops' rules rewritten from its documentation as forward hooks on the spikingjelly module (no snncc
    code): a conv/linear whose input holds only {0, 1} does ops x mean(input) ACs, otherwise ops MACs,
    at every step. snncc's counts with the first layer per step and graded inputs as MACs must agree exactly."""
    import torch
    from spikingjelly.activation_based import functional
    from test_export import dyadic_, dyadic_input
    from torch import nn

    import snncc
    net, shape, gain = build()
    net = dyadic_(net)
    x = dyadic_input(shape) * gain
    T, B = 5, shape[0]
    tally = {"ac": 0.0, "mac": 0.0}

    def hook(module, inputs, output):
        inp = inputs[0]
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            ops = kh * kw * (module.in_channels // module.groups) * module.out_channels * output.shape[-2] \
                * output.shape[-1]
        else:
            ops = module.in_features * module.out_features
        if set(torch.unique(inp).tolist()) <= {0.0, 1.0}:
            tally["ac"] += ops * inp.double().mean().item()   # per sample: mean over the batch
        else:
            tally["mac"] += ops
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.register_forward_hook(hook)
    functional.reset_net(net)
    with torch.no_grad():
        for _ in range(T):
            net(x)
    g = snncc.export(net, x, timesteps=T)
    res = torch_backend.run(g, x.numpy(), T)
    counts = count_layers(g, res.activity, B, T, first_layer="per_step", graded="mac")
    assert tally["ac"] > 0 and tally["mac"] > 0   # both kinds present: the check is not vacuous
    graded = [c for c in counts if c.input == "count"]
    assert bool(graded) == (build is _sew_resnet) and all(c.macs == c.flops * T for c in graded)
    assert sum(c.sops for c in counts) == pytest.approx(tally["ac"], rel=1e-12)
    assert sum(c.macs for c in counts) == pytest.approx(tally["mac"], rel=1e-12)
