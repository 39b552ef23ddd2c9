"""Baseline "BP on ANN" (Table 1): the BSD MLP / CNN architecture with ReLU units, trained by backprop.

Every ``SpikingNeuron`` of the feedforward path becomes a ReLU and the top
population becomes the identity (the logits); the loss is cross-entropy on the
logits. The input is static, so every time step of an ANN computes the same
values: the network runs once on step 0 and its output is repeated over T, which
keeps the training loop and the cosine-to-label-code evaluation unchanged
(cosine to one-hot codes = argmax of the logits).

An ANN has no spike graph: ``forward_path`` raises :class:`ExportError` with a
clear message (that is what ``snncc export`` reaches), the network itself is
``ann_path``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from snncc.exporter import ExportError
from snncc.training.bsd import build_forward_path
from snncc.training.bsd_cnn import block_modules, build_cnn_forward_path, cnn_channels
from snncc.training.layers import InputNormalize, TimeDistributed


def _relu():
    return TimeDistributed(nn.ReLU())


def _identity():
    return nn.Identity()


class _ANNBase(nn.Module):
    local_clipping = False  # global backprop: one global gradient norm

    @property
    def forward_path(self):
        raise ExportError("method 'ann' is the BP-on-ANN baseline: a ReLU network with analog activations, "
                          "not a spiking network; it cannot be exported to a spike graph")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """(T, B, *input) -> logits repeated over T (T, B, classes)."""
        out = self.ann_path(x_seq[:1])
        return out.expand(x_seq.shape[0], *out.shape[1:])

    def training_losses(self, x_seq: torch.Tensor, y: torch.Tensor):
        logits = self(x_seq)
        loss = F.cross_entropy(logits[0], y, reduction="sum")
        own = {name: logits for name, _ in self.named_weight_layers()[-1:]}
        return {"output layer (end-to-end CE, ANN)": loss}, {"output": logits, "spikes": {}, "currents": own}


class ANNMLP(_ANNBase):
    """The MLP of :class:`~snncc.training.bsd.BSDMLP` with ReLU units (no bias, like BSD)."""

    def __init__(self, sizes, timesteps: int = 4):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least an input and an output layer, got sizes {list(sizes)}")
        self.sizes, self.timesteps = [int(n) for n in sizes], int(timesteps)
        path = build_forward_path(self.sizes, _relu)
        path[-1] = _identity()
        self.ann_path = path

    def named_weight_layers(self) -> list:
        lin = [m.module for m in list(self.ann_path)[2::2]]
        return [(f"forward layer {i + 1} (W{i})", m) for i, m in enumerate(lin, 1)]


class ANNCNN(_ANNBase):
    """The CNN of :class:`~snncc.training.bsd_cnn.BSDCNN` with ReLU units (BN kept)."""

    def __init__(self, input_shape, num_classes: int, width: float = 1.0, timesteps: int = 4,
                 normalize: bool = False):
        super().__init__()
        self.channels, self.timesteps = cnn_channels(width), int(timesteps)
        self.ann_path, self.block_lengths = build_cnn_forward_path(
            input_shape, num_classes, self.channels, _relu, _identity, normalize=normalize)

    @property
    def input_normalizer(self):
        first = self.ann_path[0]
        return first if isinstance(first, InputNormalize) else None

    def named_weight_layers(self) -> list:
        blocks = block_modules(self.ann_path, self.block_lengths)
        return [(f"forward layer {i} (W{i - 1})", nn.ModuleList(m for m in mods if list(m.parameters())))
                for i, mods in enumerate(blocks, 2)]
