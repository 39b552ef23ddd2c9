"""Export of users' spikingjelly / torch models: same spikes as the module, BN folded, residuals, refusals."""
import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, layer, neuron
from torch import nn

import snncc
from snncc.backends import torch_ref as torch_backend
from snncc.export import ExportError, export
from snncc.ir.ops import Add
from snncc.passes.validate import check_fully_spiking


def dyadic_(module, seed=0, scale=16):
    """Weights on a 1/scale grid: float32 (spikingjelly) and float64 (snncc) sums are then exact,
    so spike trains must agree bit for bit."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randint(-6, 7, p.shape, generator=g).float() / scale
    return module


def dyadic_input(shape, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 17, shape, generator=g).float() / 16


def run_single_step(net, x, T):
    functional.reset_net(net)
    with torch.no_grad():
        return sum(net(x) for _ in range(T)).numpy()


def test_single_step_cnn_matches_spikingjelly():
    net = dyadic_(nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), neuron.LIFNode(tau=2.0, v_threshold=0.5), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=1), neuron.IFNode(v_threshold=0.5, v_reset=None), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6, 5), neuron.LIFNode(tau=2.0, v_threshold=0.25)))
    x = dyadic_input((8, 1, 8, 8))
    T = 6
    g = snncc.export(net, x, timesteps=T)
    ref = run_single_step(net, x, T)
    res = torch_backend.run(g, x.numpy(), T)
    assert ref.sum() > 5  # the comparison is not vacuous
    np.testing.assert_array_equal(res.output, ref)
    assert check_fully_spiking(g).fully_spiking
    assert [type(g.op(n)).__name__ for n in g.order()][:4] == ["Input", "Conv", "Neuron", "Pool"]
    assert g.op(g.populations()[1]).params.reset == "soft"


def test_dilated_grouped_convs_match_spikingjelly():
    """nn.Conv2d and spikingjelly's layer.Conv2d with dilation and groups (a depthwise conv too):
    the torch reference and the numba simulator give spikingjelly's own spikes."""
    from snncc.sims import numba_sim
    net = dyadic_(nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=2, dilation=2, groups=2), neuron.LIFNode(tau=2.0, v_threshold=0.5),
        layer.Conv2d(6, 6, (3, 2), stride=(1, 2), dilation=(1, 3), groups=6), neuron.IFNode(v_threshold=0.5),
        nn.Flatten(), nn.Linear(6 * 7 * 3, 4), neuron.LIFNode(tau=2.0, v_threshold=0.25)))
    x = dyadic_input((5, 2, 9, 9))
    T = 5
    g = export(net, x, timesteps=T)
    c1, c2 = [g.op(n) for n in g.synapses()][:2]
    assert (c1.dilation, c1.groups, c2.dilation, c2.groups) == ((2, 2), 2, (1, 3), 6)
    ref = run_single_step(net, x, T)
    assert ref.sum() > 5
    for run in (torch_backend.run, numba_sim.run):
        np.testing.assert_array_equal(run(g, x.numpy(), T).output, ref)


def test_multi_step_mlp_matches_spikingjelly():
    net = dyadic_(nn.Sequential(layer.Flatten(), layer.Linear(16, 12), neuron.LIFNode(tau=2.0, v_threshold=0.5),
                                layer.Linear(12, 4), neuron.LIFNode(tau=2.0, v_threshold=0.5)))
    functional.set_step_mode(net, "m")
    T = 5
    x = dyadic_input((6, 1, 4, 4))
    xs = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
    with torch.no_grad():
        ref = net(xs).sum(0).numpy()
    g = export(net, xs)
    assert g.type_of("input").shape == (1, 4, 4)
    np.testing.assert_array_equal(torch_backend.run(g, x.numpy(), T).output, ref)
    assert ref.sum() > 3


def test_batchnorm_is_folded_into_the_synapse():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), neuron.LIFNode())
    bn = net[1]
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.rand(2, 2, 5, 5)
    g = export(net.eval(), x)
    assert [type(g.op(n)).__name__ for n in g.order()] == ["Input", "Conv", "Neuron", "Readout"]
    conv = g.op(g.synapses()[0])
    folded = torch.nn.functional.conv2d(x.double(), torch.tensor(conv.weight), torch.tensor(conv.bias))
    with torch.no_grad():
        np.testing.assert_allclose(folded.numpy(), bn(net[0](x)).double().numpy(), rtol=1e-5, atol=1e-5)


class SpikeBlock(nn.Module):
    def __init__(self, c, sew):
        super().__init__()
        self.sew = sew
        self.conv1, self.sn1 = nn.Conv2d(c, c, 3, padding=1), neuron.LIFNode()
        self.conv2, self.sn2 = nn.Conv2d(c, c, 3, padding=1), neuron.LIFNode()

    def forward(self, x):
        out = self.conv2(self.sn1(self.conv1(x)))
        return self.sn2(out) + x if self.sew else self.sn2(out + x)


class TinyResNet(nn.Module):
    def __init__(self, sew):
        super().__init__()
        self.stem, self.sn = nn.Conv2d(1, 4, 3, padding=1), neuron.LIFNode()
        self.block = SpikeBlock(4, sew)
        self.pool, self.fc, self.out = nn.AvgPool2d(2), nn.Linear(4 * 2 * 2, 3), neuron.LIFNode()

    def forward(self, x):
        x = self.block(self.sn(self.stem(x)))
        return self.out(self.fc(torch.flatten(self.pool(x), 1)))


def test_spike_resnet_block_converges_on_one_population():
    net = dyadic_(TinyResNet(sew=False))
    x = dyadic_input((4, 1, 4, 4))
    g = export(net, x, timesteps=4)
    assert not g.nodes(Add)  # the add was fused into block.sn2
    assert len(g.inputs("block.sn2")) == 2
    assert check_fully_spiking(g).fully_spiking
    np.testing.assert_array_equal(torch_backend.run(g, x.numpy(), 4).output, run_single_step(net, x, 4))


def test_sew_block_keeps_its_add_and_is_hybrid():
    net = dyadic_(TinyResNet(sew=True))
    x = dyadic_input((4, 1, 4, 4))
    g = export(net, x, timesteps=4)
    (add,) = g.nodes(Add)
    rep = check_fully_spiking(g)
    assert [d.node for d in rep.violations] == [add]
    np.testing.assert_array_equal(torch_backend.run(g, x.numpy(), 4).output, run_single_step(net, x, 4))


def test_unsupported_modules_are_named():
    with pytest.raises(ExportError, match="module '1' of type ReLU has no spike-graph equivalent"):
        export(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), torch.zeros(1, 3))
    with pytest.raises(ExportError, match="unsupported spikingjelly neuron QIFNode"):
        export(nn.Sequential(nn.Linear(3, 3), neuron.QIFNode()), torch.zeros(1, 3))
    with pytest.raises(ExportError, match="cannot be folded"):
        export(nn.Sequential(nn.Linear(3, 3), neuron.LIFNode(), nn.BatchNorm1d(3)), torch.zeros(1, 3))
    with pytest.raises(ExportError, match="padding mode 'reflect'"):
        export(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), neuron.LIFNode()),
               torch.zeros(1, 2, 5, 5))
