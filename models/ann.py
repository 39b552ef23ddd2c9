"""Baseline "BP on ANN" (Table 1): the BSD MLP / CNN architecture with ReLU units, trained by backprop.

Every ``SpikingNeuron`` of the feedforward path becomes a ReLU and the top
population becomes the identity (the logits); the loss (cross-entropy on the
logits) is :mod:`snncc.training.methods.ann`'s. The input is static, so every time step of an ANN computes the same
values: the network runs once on step 0 and its output is repeated over T, which
keeps the training loop and the cosine-to-label-code evaluation unchanged
(cosine to one-hot codes = argmax of the logits).

An ANN has no spike graph: ``forward_path`` raises :class:`ExportError` with a
clear message (that is what ``snncc export`` reaches), the network itself is
``ann_path``.
"""
from __future__ import annotations

import torch
from torch import nn

from snncc.export.rules import ExportError
from snncc.models.layers import TimeDistributed


def relu():
    return TimeDistributed(nn.ReLU())


def identity():
    return nn.Identity()


class ANNBase(nn.Module):
    local_clipping = False  # global backprop: one global gradient norm

    @property
    def forward_path(self):
        raise ExportError("method 'ann' is the BP-on-ANN baseline: a ReLU network with analog activations, "
                          "not a spiking network; it cannot be exported to a spike graph")

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """(T, B, *input) -> logits repeated over T (T, B, classes)."""
        out = self.ann_path(x_seq[:1])
        return out.expand(x_seq.shape[0], *out.shape[1:])
