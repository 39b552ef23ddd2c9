"""One network of spikingjelly's model zoo through Lava's float simulator: spike train for spike train per layer
against spikingjelly's own forward pass. CIFAR10Net (small width, LIF, hard reset) without its VotingLayer, whose
fixed averaging is an analog readout that Lava (fully spiking only) refuses by design."""
import numpy as np
import torch
from spikingjelly.activation_based import neuron
from spikingjelly.activation_based.model import parametric_lif_net

from lavatest import require_lava
from snncc.passes.validate import check_fully_spiking
from test_export_zoo import T, dyadic_, dyadic_input, export_zoo, sj_trains

lb, _ = require_lava()


def test_cifar10net_on_lava_float_is_spike_exact_per_layer():
    zoo = parametric_lif_net.CIFAR10Net(channels=2, spiking_neuron=neuron.LIFNode, tau=2.0, v_threshold=0.5)
    zoo.conv_fc[-1] = torch.nn.Identity()  # every layer but the VotingLayer
    net = dyadic_(zoo)
    x = dyadic_input((1, 3, 32, 32))
    g = export_zoo(net, x, multi=False)
    assert check_fully_spiking(g).fully_spiking
    ref = sj_trains(net, x, multi=False)
    assert sum(int(v.sum()) for v in ref.values()) > 0 and set(ref) == set(g.populations())
    got = lb.run(g, x.numpy().astype(np.float64), T, record=True)
    for name, train in ref.items():
        np.testing.assert_array_equal(got.trains[name], train, err_msg=f"layer {name}")
