"""What a training method is: a loss strategy applied to any architecture that supports it.

A :class:`TrainingMethod` turns one batch into named losses; the trainer of the model kind (the image
loop for mlp / cnn, the sequence loop for rnn, ...) hands them to :func:`snncc.training.loop.step_on_losses`
(finiteness checks naming the layer, one backward, clipping, one step). Which (method, model) pairs exist,
and which architecture variant each trains, is :mod:`snncc.training.registry`'s table.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

from snncc.ir.types import StrEnum


class Method(StrEnum):
    """The built-in methods (``--method``). A method registered elsewhere may be any string."""

    BSD = "bsd"            # bidirectional spike-based distillation (local losses, BSD paper)
    BPTT = "bptt"          # surrogate-gradient BPTT end to end on the spiking forward path
    ANN = "ann"            # backprop on the same architecture with ReLU units (the ANN baseline / teacher)
    DIRECT = "direct"      # surrogate-gradient BPTT with cross-entropy on a ResNet's readout (MSKD paper)
    KD = "kd"              # vanilla KD on the final head (MSKD eq. 11 with no heads, no reconstruction)
    MSKD = "mskd"          # multi-stage KD with auxiliary heads and reconstruction (MSKD eq. 11)
    MSKD_NORECON = "mskd-norecon"  # MSKD without the reconstruction term
    BP = "bp"              # backprop on the autoencoder's ReLU twin (its App. E.2.4 baseline; "ann" of the autoencoder)


class ModelKind(StrEnum):
    """The architecture families a method is registered for (``--model`` names map onto these)."""

    MLP = "mlp"
    CNN = "cnn"
    RNN = "rnn"
    AUTOENCODER = "autoencoder"
    RESNET = "resnet"


class Variant(StrEnum):
    """Which build of an architecture a method trains."""

    PAIRED = "paired"      # Type 1 (forward) and Type 2 (backward) paths: BSD
    SPIKING = "spiking"    # the spiking forward path alone (what is exported)
    RELU = "relu"          # the same architecture with ReLU units (not a spiking network)


class TrainingMethod(ABC):
    """One method's loss strategy. Subclasses set ``name`` and ``variant`` and implement :meth:`losses`.

    ``losses(model, x, y, **context)`` -> ``({weight layer or term name: scalar loss}, info)`` with ``info``:
    ``"output"`` (what the trainer's metric reads), ``"spikes"`` ({name: spike tensor}, for firing
    rates; may be empty) and ``"currents"`` ({loss name: the current that loss sees}, so a
    non-finite loss is blamed on the right layer). ``x`` is the batch as the trainer presents it
    (image models: the static input repeated over T, (T, B, ...)); ``y`` the targets (None for
    the autoencoder); ``context`` what a trainer adds (the ResNet trainer: ``teacher`` logits, ``cfg``).

    A module of :mod:`snncc.training.methods` lists its methods in ``REGISTER = [(method, (model kinds,))]``;
    :mod:`snncc.training.registry` collects them.
    """

    name: str = ""
    variant: Variant = Variant.SPIKING

    @abstractmethod
    def losses(self, model, x, y, **context):
        """({name: scalar loss}, info) of one batch (see the class doc)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.name)!r})"
