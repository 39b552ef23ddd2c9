"""BPTT: the spiking forward path trained end to end with surrogate gradients (the BSD paper's baseline).

The forward path is built by the same function as BSD's, so both methods export the same graph and
differ only in how the weights were learned. The loss is the mean squared error between the output
firing rate (spike count / T, a rate code) and the one-hot label (:func:`rate_loss`, spikingjelly's
recipe for its MNIST / Fashion-MNIST examples); the error flows back through every layer and step via
the surrogate derivative of the Heaviside, which is exactly the global, two-phase credit assignment
that BSD avoids. Inference uses the same cosine-to-label-code rule as BSD. Any architecture whose
spiking variant offers ``forward_layers(x_seq)`` and ``named_weight_layers()`` supports it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from snncc.training.methods.base import Method, ModelKind, TrainingMethod, Variant


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


class BPTT(TrainingMethod):
    """One end-to-end loss on the top layer's spikes; clipped over the whole model."""

    name, variant = Method.BPTT, Variant.SPIKING

    def losses(self, model, x, y, **context):
        currents, spikes = model.forward_layers(x)
        names = [name for name, _ in model.named_weight_layers()]
        top = spikes[f"s{len(names) + 1}"]
        own = dict(zip(names, currents))
        return ({f"output layer {len(names) + 1} (end-to-end rate MSE)": rate_loss(top, y)},
                {"output": top, "spikes": spikes, "currents": own})


REGISTER = [(BPTT(), (ModelKind.MLP, ModelKind.CNN))]
