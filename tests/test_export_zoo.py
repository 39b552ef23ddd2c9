"""spikingjelly's model zoo through snncc.export: every deployable model, single- and multi-step, spike train for
spike train per layer against spikingjelly's own forward pass (torch and numba backends), with the validator's verdict.

Weights and inputs are dyadic (multiples of 1/16) and batch norms use eps = 0 with power-of-4 variances, so the
float32 sums of spikingjelly and the float64 sums of snncc are exact and the trains must agree bit for bit.
"""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron, surrogate
from spikingjelly.activation_based.model import parametric_lif_net, sew_resnet, spiking_resnet, spiking_vgg
from torch import nn

import snncc
from snncc.backends import torch_ref
from snncc.export import ExportError
from snncc.ir.ops import Add, Dense
from snncc.passes.validate import check_fully_spiking
from snncc.sims import numba_sim

T = 4


def dyadic_(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        for p in m.parameters(recurse=False):
            p.data = torch.randint(-6, 7, p.shape, generator=g).float() / 16
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = 0.0
            m.running_mean = torch.randint(-4, 5, m.running_mean.shape, generator=g).float() / 16
            m.running_var = 4.0 ** torch.randint(-1, 2, m.running_var.shape, generator=g).float()
            m.weight.data = torch.randint(2, 9, m.weight.shape, generator=g).float() / 4
        if isinstance(m, neuron.ParametricLIFNode):
            m.w.data.zero_()  # tau = 1 / sigmoid(0) = 2, exact in float32
    return net.eval()


def sj_trains(net, x, multi):
    """spikingjelly's own spike trains per neuron module {qualname: (T, B, ...) uint8}."""
    rec = {}
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=n: rec.setdefault(n, []).append(o.detach()))
             for n, m in net.named_modules() if isinstance(m, neuron.BaseNode)]
    functional.reset_net(net)
    with torch.no_grad():
        if multi:
            net(x.unsqueeze(0).repeat(T, *[1] * x.ndim))
        else:
            for _ in range(T):
                net(x)
    for h in hooks:
        h.remove()
    functional.reset_net(net)
    # one call per run for a multi-step module, one per step for a single-step one (also inside MultiStepContainer)
    return {n: (v[0] if len(v) == 1 else torch.stack(v)).to(torch.uint8).numpy() for n, v in rec.items()}


def export_zoo(net, x, multi):
    functional.set_step_mode(net, "m" if multi else "s")
    return snncc.export(net, x.unsqueeze(0).repeat(T, *[1] * x.ndim) if multi else x, timesteps=T)


def assert_spike_exact(net, x, multi, backends=("torch", "numba"), names=None):
    """``names``: graph node of a neuron module where they differ (a container's only child takes its name)."""
    g = export_zoo(net, x, multi)
    ref = {(names or {}).get(n, n): v for n, v in sj_trains(net, x, multi).items()}
    assert set(ref) == set(g.populations())
    assert all(v.any() for v in ref.values()), "every layer spikes: the comparison is not vacuous"
    runs = {"torch": torch_ref.run, "numba": lambda *a, **k: numba_sim.run(*a, threads=1, **k)}
    for backend in backends:
        trains = runs[backend](g, x.numpy().astype(np.float64), T, record=True).trains
        for name, train in ref.items():
            np.testing.assert_array_equal(trains[name], train, err_msg=f"{backend}: layer {name}")
    return g, ref


def verdict(g):
    return sorted((d.node, d.kind) for d in check_fully_spiking(g).violations)


def dyadic_input(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 17, shape, generator=g).float() / 16


def resnet18_if():  # per-layer thresholds
    net = spiking_resnet.spiking_resnet18(spiking_neuron=neuron.IFNode, num_classes=10)
    for i, m in enumerate(m for m in net.modules() if isinstance(m, neuron.IFNode)):
        m.v_threshold = (0.75, 1.0, 1.25)[i % 3]
    return net


def resnet18_lif_soft():  # v_reset=None, detach_reset, another surrogate: all forward-identical
    return spiking_resnet.spiking_resnet18(spiking_neuron=neuron.LIFNode, num_classes=10, tau=2.0, v_reset=None,
                                           detach_reset=True, surrogate_function=surrogate.ATan())


def sew18_add():
    return sew_resnet.sew_resnet18(spiking_neuron=neuron.IFNode, cnf="ADD", num_classes=10)


def vgg11():
    return spiking_vgg.spiking_vgg11(spiking_neuron=neuron.IFNode, num_classes=10)


def vgg11_bn():
    return spiking_vgg.spiking_vgg11_bn(spiking_neuron=neuron.IFNode, num_classes=10)


def cifar10net_plif():
    return parametric_lif_net.CIFAR10Net(channels=8, spiking_neuron=neuron.ParametricLIFNode, v_threshold=0.5)


def cifar10net_lif():
    return parametric_lif_net.CIFAR10Net(channels=8, spiking_neuron=neuron.LIFNode, tau=2.0, v_threshold=0.5)


def cifar10net_lif_no_input_decay():  # MSKD eq. 1's form (snncc.neuron, decay_input=False)
    return parametric_lif_net.CIFAR10Net(channels=8, spiking_neuron=neuron.LIFNode, tau=1.25, decay_input=False,
                                         v_threshold=0.5)


def resnet50_if():  # Bottleneck blocks
    return spiking_resnet.spiking_resnet50(spiking_neuron=neuron.IFNode, num_classes=10)


def resnext50_if():  # Bottleneck blocks with 32-group 3x3 convs
    return spiking_resnet.spiking_resnext50_32x4d(spiking_neuron=neuron.IFNode, num_classes=10)


def sew50_add():
    return sew_resnet.sew_resnet50(spiking_neuron=neuron.IFNode, cnf="ADD", num_classes=10)


def mnistnet_lif():
    return parametric_lif_net.MNISTNet(channels=4, spiking_neuron=neuron.LIFNode, tau=2.0, v_threshold=0.5)


def fashionmnistnet_plif():
    return parametric_lif_net.FashionMNISTNet(channels=4, spiking_neuron=neuron.ParametricLIFNode, v_threshold=0.5)


def nmnistnet_if():
    return parametric_lif_net.NMNISTNet(channels=4, spiking_neuron=neuron.IFNode, v_threshold=0.5)


def cifar10dvsnet_if():
    return parametric_lif_net.CIFAR10DVSNet(channels=4, spiking_neuron=neuron.IFNode, v_threshold=0.5)


def dvsgesturenet_if():
    return parametric_lif_net.DVSGestureNet(channels=4, spiking_neuron=neuron.IFNode, v_threshold=0.5)


def sew_adds(n):
    return [(a, "count") for a in ["add", *(f"add_{i}" for i in range(1, n))]]


SEW18 = sorted(sew_adds(8) + [("fc", "analog")])
SEW50 = sorted(sew_adds(16) + [("fc", "analog")])
CASES = [  # (builder, input shape, multi-step, the validator's violations)
    (resnet18_if, (1, 3, 16, 16), False, [("fc", "analog")]),
    (resnet18_lif_soft, (1, 3, 16, 16), True, [("fc", "analog")]),
    (resnet50_if, (1, 3, 16, 16), False, [("fc", "analog")]),
    (resnext50_if, (1, 3, 16, 16), False, [("fc", "analog")]),
    (sew18_add, (1, 3, 16, 16), False, SEW18),
    (sew18_add, (1, 3, 16, 16), True, SEW18),
    (sew50_add, (1, 3, 16, 16), True, SEW50),
    (vgg11, (1, 3, 32, 32), False, [("classifier.6", "analog")]),
    (vgg11_bn, (1, 3, 32, 32), True, [("classifier.6", "analog")]),
    (cifar10net_plif, (1, 3, 32, 32), False, [("conv_fc.27", "analog")]),
    (cifar10net_lif, (1, 3, 32, 32), True, [("conv_fc.27", "analog")]),
    (cifar10net_lif_no_input_decay, (1, 3, 32, 32), True, [("conv_fc.27", "analog")]),
    (mnistnet_lif, (1, 1, 28, 28), False, [("conv_fc.15", "analog")]),
    (fashionmnistnet_plif, (1, 1, 28, 28), True, [("conv_fc.15", "analog")]),
    (nmnistnet_if, (1, 2, 34, 34), False, [("conv_fc.15", "analog")]),
    (cifar10dvsnet_if, (1, 2, 128, 128), True, [("conv_fc.23", "analog")]),
    (dvsgesturenet_if, (1, 2, 128, 128), False, [("conv_fc.27", "analog")]),
]


@pytest.mark.parametrize("build,shape,multi,violations", CASES,
                         ids=[f"{c[0].__name__}-{'multi' if c[2] else 'single'}" for c in CASES])
def test_zoo_model_is_spike_exact_per_layer(build, shape, multi, violations):
    net = dyadic_(build())
    g, ref = assert_spike_exact(net, dyadic_input(shape), multi)
    assert verdict(g) == violations
    mods = dict(net.named_modules())
    assert all(g.op(n).params.v_th == mods[n].v_threshold for n in ref)
    if build in (sew18_add, sew50_add):  # the SEW ADD is named as a spike ADD feeding the next synapse
        (d,) = [d for d in check_fully_spiking(g).violations if d.node == "add"]
        assert "spike ADD (SEW)" in d.reason and isinstance(g.op("add"), Add)


@pytest.mark.parametrize("depth", [34, 101, 152])
def test_deep_resnets_export_with_their_verdict(depth):
    """Same blocks as resnet18 (34) and resnet50 (101, 152), which are spike-exact above: export and verdict only."""
    torch.manual_seed(0)
    net = getattr(spiking_resnet, f"spiking_resnet{depth}")(spiking_neuron=neuron.IFNode, num_classes=10)
    g = export_zoo(net, torch.rand(1, 3, 16, 16), multi=depth == 101)
    blocks = {34: 16, 101: 33, 152: 50}[depth]
    per_block = 2 if depth == 34 else 3
    assert len(g.populations()) == 1 + per_block * blocks
    assert verdict(g) == [("fc", "analog")]
    assert not g.nodes(Add)  # every residual add converges on the block's last population


def test_sew_and_iand_are_refused_naming_the_block():
    for cnf, what in [("AND", "mul"), ("IAND", "sub")]:
        net = sew_resnet.sew_resnet18(spiking_neuron=neuron.IFNode, cnf=cnf, num_classes=10)
        with pytest.raises(ExportError, match=rf"module 'layer1\.0' \(BasicBlock\): {what}.*SEW '(AND|IAND)'"):
            export_zoo(net, torch.rand(1, 3, 16, 16), multi=False)


def test_plif_exports_its_learned_tau():
    net = nn.Sequential(nn.Linear(3, 4), neuron.ParametricLIFNode(init_tau=3.0, v_threshold=0.75, v_reset=None))
    net[1].w.data.fill_(0.7)
    g = snncc.export(net, torch.zeros(1, 3))
    (pop,) = g.populations()
    p = g.op(pop).params
    w = float(net[1].w.detach())  # 0.7 in float32
    assert p.tau == pytest.approx(1 + np.exp(-w), rel=1e-12) and p.v_th == 0.75 and p.reset == "soft"


def test_refusals_name_the_module_and_reason():
    lin = nn.Linear(3, 4)
    with pytest.raises(ExportError, match="module '0': Conv2d with padding mode 'reflect'"):
        snncc.export(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"), neuron.IFNode()),
                     torch.zeros(1, 1, 4, 4))
    with pytest.raises(ExportError, match="surrogate Sigmoid: its forward pass is not the Heaviside step"):
        snncc.export(nn.Sequential(lin, neuron.IFNode(surrogate_function=surrogate.Sigmoid(spiking=False))),
                     torch.zeros(1, 3))
    # 4x4 -> 3x3 is no fixed pool, and a conv (not a Linear) reads it
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), neuron.IFNode(), nn.AdaptiveAvgPool2d(3), nn.Conv2d(2, 2, 3))
    with pytest.raises(ExportError, match=r"adaptive average pooling '2' from \[4, 4\] to \[3, 3\] is no fixed pool"):
        snncc.export(net, torch.zeros(1, 1, 4, 4))
    net[3] = nn.Linear(3, 2)  # a Linear on the unflattened pool acts on its last axis: no fold either
    with pytest.raises(ExportError, match=r"is no fixed pool.*not into module '3' \(Linear\)"):
        snncc.export(net, torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("size,pooled", [(8, True), (6, False)])
def test_adaptive_pool_is_a_fixed_pool_or_folds_into_the_linear(size, pooled):
    net = dyadic_(nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 3, 3, padding=1), sn1=neuron.IFNode(v_threshold=0.5), pool=nn.AdaptiveAvgPool2d(4),
        flat=nn.Flatten(), fc=nn.Linear(48, 5), sn2=neuron.IFNode(v_threshold=0.5))))
    x = dyadic_input((2, 1, size, size))
    g, _ = assert_spike_exact(net, x, multi=False)
    kinds = [type(g.op(n)).__name__ for n in g.order()]
    assert ("Pool" in kinds) == pooled
    dense = g.op(g.synapses()[-1])
    assert isinstance(dense, Dense) and dense.weight.shape[1] == (48 if pooled else 3 * size * size)


class UserMultiStepNet(nn.Module):
    """The conversions users write in multi-step mode: seq_to_ann_forward over a list and over a Sequential,
    SeqToANNContainer, multi_step_forward, a step-mode neuron, MultiStepContainer around a single-step neuron."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.sn1 = neuron.LIFNode(tau=2.0, v_threshold=0.5, step_mode="m")
        self.pool = layer.SeqToANNContainer(nn.MaxPool2d(2))
        self.flat = nn.Sequential(nn.Flatten())
        self.fc = nn.Linear(64, 5)
        self.sn2 = layer.MultiStepContainer(neuron.IFNode(v_threshold=0.5))

    def forward(self, x_seq):
        x_seq = self.sn1(functional.seq_to_ann_forward(x_seq, [self.conv, self.bn]))
        x_seq = functional.seq_to_ann_forward(self.pool(x_seq), self.flat)
        return self.sn2(functional.multi_step_forward(x_seq, self.fc))


def test_users_multi_step_conversions_are_spike_exact():
    g, _ = assert_spike_exact(dyadic_(UserMultiStepNet()), dyadic_input((3, 1, 8, 8)), multi=True,
                              names={"sn2.0": "sn2"})
    assert [type(g.op(n)).__name__ for n in g.order()] == \
        ["Input", "Conv", "Neuron", "Pool", "Flatten", "Dense", "Neuron", "Readout"]


def test_other_functional_calls_in_forward_are_refused_by_name():
    class Net(UserMultiStepNet):
        def forward(self, x_seq):
            return functional.delay(super().forward(x_seq), 1)  # kept as one call by the tracer

    with pytest.raises(ExportError, match="^Net.forward: delay: call_function delay has no spike-graph equivalent"):
        export_zoo(Net(), torch.zeros(1, 1, 8, 8), multi=True)
