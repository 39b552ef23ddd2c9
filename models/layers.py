"""Trainable spiking layers built on :mod:`snncc.neuron`.

:class:`SpikingNeuron` runs the single neuron definition over a time axis with
a spikingjelly surrogate gradient for the Heaviside (ATan for BSD, sigmoid with
alpha=4 for MSKD). The forward pass is the hard threshold of snncc.neuron.fire
(spikingjelly's surrogates compute ``x >= 0`` forward, the same spikes), so a
trained network emits exactly the spikes its exported graph will.

All T steps run inside one autograd Function (:class:`MultiStepNeuron`): the
forward applies ``snncc.neuron.charge / fire / reset`` step by step (``fire``'s
comparison ``H >= v_th`` written straight into the float spike buffer), and the
backward is the closed-form backpropagation through time of those three
equations with spikingjelly's surrogate derivative (``atan_backward`` /
``sigmoid_backward``) standing in for the Heaviside's. It returns exactly what
autograd through the per-step operations returns (tests/test_neuron_fn.py
checks every model / reset / surrogate / detach_reset combination against it),
without recording ~10 graph nodes per step and population.

A current-based population (``NeuronParams.tau_syn > 1``, CUBA) first filters its input with
``snncc.neuron.synapse`` (:func:`synaptic_currents`, plain autograd: one linear recurrence), then
runs the same function on the filtered currents: the reference executor's order (synapse, then
charge, per step).
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
# d spike / d h of each surrogate, as spikingjelly computes it in its backward pass
_SURROGATE_GRADS = {"atan": surrogate.atan_backward, "sigmoid": surrogate.sigmoid_backward}


class MultiStepNeuron(torch.autograd.Function):
    """Spikes (T, B, ...) of one population for input currents ``x`` (T, B, ...).

    Backward (for one step, ``g_h`` = dL/dH[t], ``g_v`` = dL/dU[t] from step t+1,
    ``sg`` = surrogate derivative at H[t] - v_th)::

        g_h = dL/dS[t] * sg + g_v * dU[t]/dH[t]
              hard reset: dU/dH = (1 - S) + (v_reset - H) * sg    (1 - S with detach_reset)
              soft reset: dU/dH = 1 - v_th * sg                   (1 with detach_reset)
        dL/dI[t] = g_h / tau,   dL/dU[t-1] = g_h * (1 - 1/tau)      (LIF; both g_h for IF)
        dL/dI[t] = g_h                                              (LIF with decay_input=False)
    """

    @staticmethod
    def forward(ctx, x, scalars, surrogate_name, alpha, detach_reset, keep):
        leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input = scalars
        spikes = torch.empty_like(x)
        hs = torch.empty_like(x) if keep else None
        v = v_rest  # U[0] = v_rest (a python float broadcasts in charge)
        for t in range(x.shape[0]):
            h = nrn.charge(v, x[t], leaky, inv_tau, v_rest, decay_input)
            s = spikes[t]
            # nrn.fire(h, v_th), i.e. h >= v_th as 0/1, written straight into the float spike
            # buffer: the same comparison without materialising a bool tensor and converting it
            # (~18x cheaper on CPU); tests/test_neuron_fn.py checks it against nrn.fire, ties included
            torch.ge(h, v_th, out=s)
            v = nrn.reset(h, s, v_th, v_reset, soft)
            if keep:
                hs[t] = h
        if keep:
            ctx.save_for_backward(hs, spikes)
            ctx.scalars, ctx.surrogate, ctx.alpha, ctx.detach_reset = scalars, surrogate_name, alpha, detach_reset
        return spikes

    @staticmethod
    def backward(ctx, grad_s):
        hs, spikes = ctx.saved_tensors
        leaky, inv_tau, v_th, v_reset, _, soft, decay_input = ctx.scalars
        sg_fn = _SURROGATE_GRADS[ctx.surrogate]
        grad_x = torch.empty_like(hs)
        g_v = None  # dL/dU[t] carried back from step t+1 (none after the last step)
        for t in range(hs.shape[0] - 1, -1, -1):
            h, s = hs[t], spikes[t]
            sg = sg_fn(1.0, h - v_th, ctx.alpha)[0]
            g_h = grad_s[t] * sg
            if g_v is not None:
                if soft:
                    du_dh = 1.0 if ctx.detach_reset else 1.0 - v_th * sg
                else:
                    du_dh = 1.0 - s if ctx.detach_reset else (1.0 - s) + (v_reset - h) * sg
                g_h = g_h + g_v * du_dh
            if leaky:
                grad_x[t] = g_h * inv_tau if decay_input else g_h
                g_v = g_h * (1.0 - inv_tau)
            else:
                grad_x[t] = g_h
                g_v = g_h
        return grad_x, None, None, None, None, None


def synaptic_currents(x: torch.Tensor, inv_tau_syn: float) -> torch.Tensor:
    """CUBA synaptic currents J[t] = snncc.neuron.synapse(J[t-1], x[t], 1/tau_syn), J[-1] = 0, over (T, B, ...)."""
    i = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        i = nrn.synapse(i, x[t], inv_tau_syn)
        out.append(i)
    return torch.stack(out)


class SpikingNeuron(nn.Module):
    """A LIF/IF population over inputs shaped (T, B, *features); returns spikes (T, B, *features).

    ``detach_reset`` follows spikingjelly's option (no gradient through the reset).
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
        if self.params.current_based:
            x = synaptic_currents(x, 1.0 / self.params.tau_syn)
        keep = torch.is_grad_enabled() and x.requires_grad  # save H only when a backward can follow
        return MultiStepNeuron.apply(x, self.params.scalars(), self.surrogate_name, float(self.spike_fn.alpha),
                                     self.detach_reset, keep)

    def extra_repr(self) -> str:
        p = self.params
        extra = ("" if p.decay_input else ", decay_input=False") + (f", tau_syn={p.tau_syn}" if p.current_based else "")
        return (f"{p.model}, tau={p.tau}, v_th={p.v_th}, v_reset={p.v_reset}, reset={p.reset}{extra}, "
                f"surrogate={self.surrogate_name}")


class InputNormalize(nn.Module):
    """Per-channel input normalisation ``(x - mean[c]) / std[c]`` with fixed statistics.

    The statistics are buffers (saved in checkpoints) set from the training data
    (:meth:`set_stats`); ``feature_dims`` is the rank of one sample, (C, H, W) -> 3, so
    any leading batch / time axes broadcast. Placed directly on a network's input it
    exports as the graph Input's ``mean`` / ``std`` (``snncc.ir.ops.Input.present``).
    """

    def __init__(self, channels: int, feature_dims: int = 3):
        super().__init__()
        self.feature_dims = int(feature_dims)
        self.register_buffer("mean", torch.zeros(int(channels)))
        self.register_buffer("std", torch.ones(int(channels)))

    @torch.no_grad()
    def set_stats(self, mean, std) -> None:
        mean = torch.as_tensor(mean, dtype=self.mean.dtype).reshape(-1)
        std = torch.as_tensor(std, dtype=self.std.dtype).reshape(-1)
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(f"normalisation statistics must have {self.mean.numel()} channels")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all() and (std > 0).all()):
            raise ValueError("normalisation needs a finite mean and a std > 0 per channel")
        self.mean.copy_(mean)
        self.std.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (self.feature_dims - 1)
        return (x - self.mean.view(shape)) / self.std.view(shape)

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}"


def channel_stats(x) -> tuple:
    """Per-channel mean and std of samples ``x`` (N, C, ...) -> two float64 arrays of length C."""
    import numpy as np
    x = np.asarray(x, dtype=np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    return x.mean(axis=axes), np.maximum(x.std(axis=axes), 1e-6)


class TimeDistributed(nn.Module):
    """Apply a stateless module to every step of a (T, B, ...) tensor at once."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        y = self.module(x.reshape(t * b, *x.shape[2:]))
        return y.reshape(t, b, *y.shape[1:])
