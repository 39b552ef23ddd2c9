"""One evaluation loop for every trainer; what it measures is the output kind's :class:`Metric`.

``evaluate(model, batches, metric, reduce=None)`` puts the model in eval mode, runs it on every batch
without gradients, adds up the metric's per-batch sums and turns them into the result dict. A metric
says how to get the output of a batch (``output``), which sums one batch contributes (``score``) and
what they mean (``result``); ``reduce`` (distributed runs) all-reduces the sums across ranks first.

=====================  =========================================================  ============================
metric                 output                                                     result
=====================  =========================================================  ============================
:class:`CountAccuracy` image models: top-layer spike counts (ANN: logits) over T  ``test_accuracy`` (Sec. 4.3)
:class:`LogitAccuracy` ResNets: the student's readout logits (ANN: its logits)    ``test_accuracy``
:class:`SequenceScores` BSD-RNN: per-element outputs                              text ``test_accuracy``;
                                                                                   series ``test_mse``, ``test_mae``
:class:`ReconstructionError` autoencoder: the reconstruction                      ``test_mse`` per pixel
=====================  =========================================================  ============================
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from snncc.training.methods.bsd import cosine_predict, repeat_time


class Metric(ABC):
    """Per-output strategy of :func:`evaluate` (see the module table)."""

    def output(self, model, xb):
        return model(xb)

    @abstractmethod
    def score(self, out, yb) -> list:
        """The sums one batch contributes."""

    @abstractmethod
    def result(self, sums) -> dict:
        """The result dict from the summed scores."""


class CountAccuracy(Metric):
    """Argmax of the cosine between spike counts and the label codes (one-hot x T; ``population`` P:
    P ones per class, :func:`~snncc.training.methods.bsd.cosine_predict`)."""

    def __init__(self, timesteps: int, population: int = 1):
        self.timesteps, self.population = timesteps, population

    def output(self, model, xb):
        return model(repeat_time(xb, self.timesteps)).sum(0)

    def score(self, out, yb):
        return [int((cosine_predict(out, self.population) == yb).sum()), len(yb)]

    def result(self, sums):
        return {"test_accuracy": sums[0] / sums[1]}


class LogitAccuracy(CountAccuracy):
    """Argmax of the logits: a spiking ResNet's readout of its direct-encoded input, or the ANN's output."""

    def __init__(self, spiking: bool):
        self.spiking = spiking

    def output(self, model, xb):
        return model.logits(model(model.encode(xb))) if self.spiking else model(xb)

    def score(self, out, yb):
        return [int((out.argmax(1) == yb).sum()), len(yb)]


class SequenceScores(Metric):
    """Text: element-wise next-character accuracy (App. E.2.3); series: MSE and MAE (eqs. 23-24)."""

    def __init__(self, task: str):
        self.text = task == "text"

    def score(self, out, yb):
        if self.text:
            return [int((out.argmax(-1) == yb).sum()), 0.0, yb.numel()]
        return [float(((out - yb) ** 2).sum()), float((out - yb).abs().sum()), yb.numel()]

    def result(self, sums):
        if self.text:
            return {"test_accuracy": sums[0] / sums[2]}
        return {"test_mse": sums[0] / sums[2], "test_mae": sums[1] / sums[2]}


class ReconstructionError(Metric):
    """Squared error per pixel of ``model.reconstruct`` against the input images."""

    def output(self, model, xb):
        return model.reconstruct(xb)

    def score(self, out, xb):
        return [float(((out - xb) ** 2).sum()), xb.numel()]

    def result(self, sums):
        return {"test_mse": sums[0] / sums[1]}


@torch.no_grad()
def evaluate(model, batches, metric: Metric, reduce=None) -> dict:
    """``metric``'s result over ``batches`` of (inputs, targets) (the autoencoder's targets are the inputs)."""
    model.eval()
    sums = None
    for xb, yb in batches:
        score = metric.score(metric.output(model, xb), yb)
        sums = score if sums is None else [a + b for a, b in zip(sums, score)]
    if reduce is not None:
        sums = reduce(sums)
    return metric.result(sums)
