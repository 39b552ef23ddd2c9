"""Trainable spiking layers built on :mod:`snncc.neuron`.

:class:`SpikingNeuron` runs the single neuron definition over a time axis with
a spikingjelly surrogate gradient for the Heaviside (ATan for BSD, sigmoid with
alpha=4 for MSKD). The forward pass is the hard threshold of snncc.neuron.fire
(spikingjelly's surrogates compute ``x >= 0`` forward), so a trained network
emits exactly the spikes its exported graph will.
"""
from __future__ import annotations

import torch
from spikingjelly.activation_based import surrogate
from torch import nn

from snncc import neuron as nrn
from snncc.neuron import NeuronParams

SURROGATES = {
    "atan": lambda: surrogate.ATan(alpha=2.0),
    "sigmoid": lambda: surrogate.Sigmoid(alpha=4.0),
}


class SpikingNeuron(nn.Module):
    """A LIF/IF population over inputs shaped (T, B, *features); returns spikes (T, B, *features).

    ``record_voltage=True`` keeps the pre-spike potentials H of the last call in
    ``self.h`` (used by analyses). ``detach_reset`` follows spikingjelly's option.
    """

    def __init__(self, params: NeuronParams = NeuronParams(), surrogate_fn: str = "atan",
                 detach_reset: bool = False):
        super().__init__()
        if surrogate_fn not in SURROGATES:
            raise ValueError(f"unknown surrogate {surrogate_fn!r} (choose from {', '.join(SURROGATES)})")
        self.params = params
        self.surrogate_name = surrogate_fn
        self.spike_fn = SURROGATES[surrogate_fn]()
        self.detach_reset = detach_reset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leaky, inv_tau, v_th, v_reset, v_rest, soft = self.params.scalars()
        v = torch.full_like(x[0], v_rest)
        out = []
        for t in range(x.shape[0]):
            h = nrn.charge(v, x[t], leaky, inv_tau, v_rest)
            s = self.spike_fn(h - v_th)
            s_reset = s.detach() if self.detach_reset else s
            v = nrn.reset(h, s_reset, v_th, v_reset, soft)
            out.append(s)
        return torch.stack(out)

    def extra_repr(self) -> str:
        p = self.params
        return f"{p.model}, tau={p.tau}, v_th={p.v_th}, v_reset={p.v_reset}, reset={p.reset}, surrogate={self.surrogate_name}"


class TimeDistributed(nn.Module):
    """Apply a stateless module to every step of a (T, B, ...) tensor at once."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        y = self.module(x.reshape(t * b, *x.shape[2:]))
        return y.reshape(t, b, *y.shape[1:])
