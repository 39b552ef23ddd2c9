"""BSD's locality (criterion C2), once for every model it trains: each local loss reaches only its own
weight layer, every weight layer has exactly one loss, and every parameter belongs to one weight layer."""
from __future__ import annotations

import pytest
import torch

from snncc.data.datasets import load_split
from snncc.models.autoencoder import BSDAutoencoder
from snncc.models.cnn import BSDCNN
from snncc.models.mlp import BSDMLP
from snncc.models.rnn import BSDRNN
from snncc.training.methods.bsd import repeat_time

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is fastest on a busy box


def _digits(n):
    x, y = load_split("digits", "train", limit=n, seed=0)
    return torch.from_numpy(x), torch.from_numpy(y)


def _mlp(pairs="all", same_weight=1.0):
    x, y = _digits(48)
    return (BSDMLP((64, 32, 24, 10), timesteps=3, reco_pairs=pairs, reco_same_weight=same_weight),
            (repeat_time(x, 3), y), 6)


def _cnn(pairs="all", same_weight=1.0):
    x, y = _digits(16)
    return (BSDCNN((1, 8, 8), 10, width=0.125, timesteps=2, v_th=0.5, v_th_backward=0.5, reco_pairs=pairs,
                   reco_same_weight=same_weight), (repeat_time(x, 2), y), 12)


def _mlp_same_weight():
    return _mlp("all", 0.3)


def _cnn_same_weight():
    return _cnn("all", 0.3)


def _mlp_distinct():
    return _mlp("distinct-labels")


def _mlp_positive():
    return _mlp("same-label-positive")


def _cnn_positive():
    return _cnn("same-label-positive")


def _autoencoder():
    x, _ = _digits(8)
    return BSDAutoencoder((1, 8, 8), width=1 / 32, timesteps=3).train(), (x,), 12


def _rnn():
    x = torch.nn.functional.one_hot(torch.randint(0, 5, (6, 7)), 5).float()
    return BSDRNN(5, 5, hidden=12, v_th=0.1), (x, torch.randint(0, 5, (6, 7))), 4


@pytest.mark.parametrize("build", [_mlp, _mlp_distinct, _mlp_positive, _mlp_same_weight, _cnn, _cnn_positive,
                                   _cnn_same_weight, _autoencoder, _rnn],
                         ids=["mlp", "mlp-distinct-labels", "mlp-same-label-positive", "mlp-same-weight", "cnn",
                              "cnn-same-label-positive", "cnn-same-weight", "autoencoder", "rnn"])
def test_each_local_loss_reaches_only_its_own_layer(build):
    torch.manual_seed(0)
    model, inputs, n_layers = build()
    losses, _ = model.training_losses(*inputs)
    layers = dict(model.named_weight_layers())
    assert set(losses) == set(layers) and len(layers) == n_layers  # every weight has exactly one local loss
    owned = [id(p) for layer in layers.values() for p in layer.parameters()]
    assert sorted(owned) == sorted(id(p) for p in model.parameters())  # each parameter in exactly one layer
    for name, loss in losses.items():
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
        loss.backward(retain_graph=True)
        for other, layer in layers.items():
            total = sum(float(p.grad.abs().sum()) for p in layer.parameters())
            if other == name:
                assert total > 0, f"{name} got no gradient from its own loss"
            else:
                assert total == 0, f"loss of {name} leaked into {other}"
