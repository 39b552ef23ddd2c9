"""Baseline: the same spiking MLP trained end to end with surrogate-gradient BPTT.

The forward path is built by the same function as BSD's, so both methods export
the same graph and differ only in how the weights were learned. The loss is
the mean squared error between the output firing rate (spike count / T, a rate
code) and the one-hot label (:func:`rate_loss`, spikingjelly's recipe for its
MNIST / Fashion-MNIST examples); the error flows back through every layer and
step via the surrogate derivative of the Heaviside, which is exactly the global, two-phase credit assignment that BSD
avoids. Inference uses the same cosine-to-label-code rule as BSD.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from snncc.training.bsd import build_forward_path, forward_weights, make_neuron, run_forward_path


def rate_loss(spikes: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """BPTT's output loss: sum over the batch of ||rate - onehot(y)||^2 for (T, B, C) output spikes.

    Pushes the label's neuron to fire every step and every other output neuron to stay
    silent, which is what the spike-count readout needs. Cross-entropy on the rate was
    used before: rates live in [0, 1], so CE keeps several classes firing at the same
    saturated count and the count readout ties (Fashion-MNIST, 3 epochs: 58 % of test
    samples tied, 60.8 % accuracy; 86.5 % with this loss, docs/results.md).
    """
    rate = spikes.mean(0)
    return F.mse_loss(rate, F.one_hot(y, rate.shape[1]).to(rate.dtype), reduction="sum")


class BPTTMLP(nn.Module):
    """``sizes`` = [n_1, ..., n_L] as for :class:`~snncc.training.bsd.BSDMLP`."""

    local_clipping = False  # one global gradient norm, the usual choice for BPTT

    def __init__(self, sizes, timesteps: int = 4, v_th: float = 0.2, tau: float = 2.0,
                 neuron_model: str = "lif", surrogate: str = "atan"):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least an input and an output layer, got sizes {list(sizes)}")
        self.sizes, self.timesteps = [int(n) for n in sizes], int(timesteps)
        self.forward_path = build_forward_path(self.sizes, lambda: make_neuron(v_th, tau, neuron_model, surrogate))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Inference: (T, B, *input) -> top-layer spikes (T, B, n_L)."""
        return self.forward_path(x_seq)

    def named_weight_layers(self) -> list:
        return [(f"forward layer {i + 1} (W{i})", m) for i, m in enumerate(forward_weights(self.forward_path), 1)]

    def training_losses(self, x_seq: torch.Tensor, y: torch.Tensor):
        """({"output layer (end-to-end rate MSE)": loss}, info), the loss summed over the batch."""
        v, s = run_forward_path(self.forward_path, x_seq, detach=False)
        loss = rate_loss(s[-1], y)
        spikes = {f"s{i}": si for i, si in enumerate(s, 1)}
        own = dict(zip((name for name, _ in self.named_weight_layers()), v[1:]))
        info = {"output": s[-1], "spikes": spikes, "currents": own}
        return {f"output layer {len(s)} (end-to-end rate MSE)": loss}, info
