"""Backprop on an ANN: the architecture's ReLU twin trained end to end (no spikes, not exportable).

``ann`` is one method -- cross-entropy on the logits of the same architecture with ReLU units -- for
the BSD paper's MLP / CNN ("BP on ANN", Table 1) and for the MSKD paper's ResNets (the teacher and ANN
baseline). The two trainers differ in their batch convention, kept from the papers' recipes: the image
trainer sums the per-sample loss over the batch (as BSD's local losses) and presents the static input
over T (the ReLU twin computes step 0 and repeats it); the ResNet trainer averages over the batch (SGD
recipe of MSKD). ``bp`` is the autoencoder's ReLU twin trained on the reconstruction error.
"""
from __future__ import annotations

import torch.nn.functional as F

from snncc.training.methods.base import Method, ModelKind, TrainingMethod, Variant
from snncc.training.methods.bsd_fft import recon_mse


class ANN(TrainingMethod):
    """Image models: the output is (T, B, classes), the logits repeated over T; cross-entropy of step 0,
    summed over the batch."""

    name, variant = Method.ANN, Variant.RELU

    def losses(self, model, x, y, **context):
        out = model(x)
        own = {name: out for name, _ in model.named_weight_layers()[-1:]}
        return ({"output layer (end-to-end CE, ANN)": F.cross_entropy(out[0], y, reduction="sum")},
                {"output": out, "spikes": {}, "currents": own})


class ANNResNet(ANN):
    """ResNets: (B, C, H, W) images in, (B, classes) logits out; cross-entropy averaged over the batch."""

    def losses(self, model, x, y, **context):
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        return ({"cross-entropy": loss}, {"output": logits, "spikes": {}, "currents": {}, "rates": None,
                                           "parts": {"L_c": float(loss.detach()), "L_k": 0.0, "L_r": 0.0}})


class ReconstructionBP(TrainingMethod):
    """The autoencoder's ReLU twin: per-sample pixel MSE of the reconstruction, summed over the batch."""

    name, variant = Method.BP, Variant.RELU

    def losses(self, model, x, y=None, **context):
        out = model.reconstruct(x)
        return ({"output layer 7 (end-to-end MSE, ANN)": recon_mse(out, x)},
                {"output": out, "spikes": {}, "currents": {"forward layer 7 (W6)": out}})


REGISTER = [(ANN(), (ModelKind.MLP, ModelKind.CNN)), (ANNResNet(), (ModelKind.RESNET,)),
            (ReconstructionBP(), (ModelKind.AUTOENCODER,))]
