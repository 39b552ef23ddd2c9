"""snncc.analysis.infoflow: per-block firing rates (Fig. 4) and the reconstruction I(X; Z_l) proxy (Fig. 2)."""
import numpy as np
import pytest
import torch

from snncc.analysis.infoflow import (block_firing_rates, information_flow, plot_firing_rate_heatmap,
                                     plot_information_flow)
from snncc.models.resnet import build_resnet
from snncc.neuron import NeuronParams


def _model(name):
    torch.manual_seed(0)
    # a low threshold so that the untrained eval-mode network (unit BN statistics) spikes
    return build_resnet(name, 10, 1, stem="small", width=0.125, timesteps=2, input_size=(28, 28),
                        neuron_params=NeuronParams(v_th=0.3))


def test_firing_rates_and_heatmap(tmp_path):
    m = _model("spike-resnet18")
    x = torch.rand(6, 1, 28, 28)
    rates = block_firing_rates(m, x, batch_size=4)
    assert rates.shape == (8, 2) and np.all((rates >= 0) & (rates <= 1)) and rates.sum() > 0
    # block 1 only: its two populations, recomputed by hand
    with torch.no_grad():
        _, stem, _ = m.forward_features(m.encode(x))
        b = m.layer1[0]
        s1 = b.sn1(b.bn1(b.conv1(stem)))
        s2 = b.sn2(b.bn2(b.conv2(s1)) + stem)
    by_hand = (s1.flatten(1).sum(1) + s2.flatten(1).sum(1)) / (s1[0].numel() + s2[0].numel())
    np.testing.assert_allclose(rates[0], by_hand.double().numpy(), rtol=1e-6)
    p = plot_firing_rate_heatmap({"spike": rates, "ms": block_firing_rates(_model("ms-resnet18"), x)},
                                 tmp_path / "rates.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_firing_rate_heatmap(rates, tmp_path / "t.png").is_file()


def test_information_flow_proxy(tmp_path):
    m = _model("ms-resnet18")
    g = torch.Generator().manual_seed(0)
    x_tr, x_te = torch.rand(48, 1, 28, 28, generator=g), torch.rand(16, 1, 28, 28, generator=g)
    r = information_flow(m, x_tr, x_te, blocks=[1, 8], steps=15, batch_size=16)
    assert r["block"] == [1, 8] and r["depth"] == [0.125, 1.0]
    assert all(np.isfinite(r["mse"])) and all(np.isfinite(r["bits_per_dim"]))
    assert plot_information_flow({"ms": r}, tmp_path / "flow.png").is_file()
    with pytest.raises(ValueError, match="outside 1..8"):
        information_flow(m, x_tr, x_te, blocks=[9], steps=1)
