"""spikingjelly's modules in the export rule table (docs/spikingjelly.md lists what maps and what is refused).

Neurons: ``LIFNode`` (``decay_input`` True or False), ``ParametricLIFNode`` (its learned tau, 1/sigmoid(w)), ``IFNode``;
``v_reset=None`` is the soft reset, ``v_threshold`` is per layer, ``detach_reset`` only changes gradients,
and any surrogate whose forward pass is the Heaviside step is accepted (checked on probe values).
Layers: spikingjelly's wrappers of torch layers map through torch's classes; ``layer.Dropout`` is the
identity at inference; ``VotingLayer`` is a fixed Dense averaging each group of output neurons;
``SeqToANNContainer`` / ``MultiStepContainer`` are containers and ``functional.seq_to_ann_forward`` /
``functional.multi_step_forward`` apply their module argument (multi-step mode).
"""
from __future__ import annotations

import numpy as np
import torch

from snncc.compat import torchvision_shim
from snncc.export.rules import ExportError, register
from snncc.ir.ops import Dense, Neuron
from snncc.neuron import HARD, IF, LIF, SOFT, NeuronParams

torchvision_shim.install()  # the model zoo imports torchvision's load_state_dict_from_url at module level

try:  # spikingjelly is a dependency, but keep the exporter importable without it
    from spikingjelly.activation_based import functional as sj_functional
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import neuron as sj_neuron
except ImportError:  # pragma: no cover
    sj_layer = sj_neuron = sj_functional = None

_PROBE = torch.tensor([-1.0, -1e-6, 0.0, 1e-6, 1.0])


def _check_spiking(m) -> None:
    """The neuron's forward pass must emit Heaviside(h - v_th) in float32 (what snncc's `fire` computes)."""
    name = type(m).__name__
    sg = m.surrogate_function
    try:
        with torch.no_grad():
            heaviside = torch.equal(sg(_PROBE), (_PROBE >= 0).float())
    except Exception:  # a surrogate that cannot even run on a probe is no step function
        heaviside = False
    if not heaviside:
        raise ExportError(f"{name} with surrogate {type(sg).__name__}: its forward pass is not the Heaviside "
                          f"step (spiking=False or a pass-through surrogate emits analog values, not spikes)")
    if getattr(m, "_neuron_precision", None) is not None:
        raise ExportError(f"{name} keeps its state in reduced precision {m._neuron_precision}; snncc's is float64")


def neuron_params(m) -> NeuronParams:
    """snncc's parameters of a spikingjelly LIFNode / ParametricLIFNode / IFNode (anything else: ExportError)."""
    name = type(m).__name__
    reset = SOFT if m.v_reset is None else HARD
    v_reset = 0.0 if m.v_reset is None else float(m.v_reset)
    if type(m) in (sj_neuron.LIFNode, sj_neuron.ParametricLIFNode):
        # decay_input=False: the LIF without input decay (MSKD eq. 1's form; snncc.neuron)
        tau = float(m.tau) if type(m) is sj_neuron.LIFNode else 1.0 / float(torch.sigmoid(m.w.detach().double()))
        _check_spiking(m)
        return NeuronParams(LIF, tau, float(m.v_threshold), v_reset, reset, decay_input=bool(m.decay_input))
    if type(m) is sj_neuron.IFNode:
        _check_spiking(m)
        return NeuronParams(IF, 2.0, float(m.v_threshold), v_reset, reset)
    raise ExportError(f"unsupported spikingjelly neuron {name} (LIFNode, ParametricLIFNode and IFNode are)")


def _voting(m, in_shape) -> Dense:
    """VotingLayer: output j is the mean of inputs [j*v, (j+1)*v) (avg_pool1d; a trailing partial group is dropped)."""
    if len(in_shape) != 1:
        raise ExportError(f"VotingLayer reads a vector, not shape {list(in_shape)}")
    v = int(m.voting_size)
    w = np.kron(np.eye(in_shape[0] // v), np.full((1, v), 1.0 / v))
    return Dense(np.pad(w, ((0, 0), (0, in_shape[0] - w.shape[1]))))


if sj_neuron is not None:
    register(sj_neuron.BaseNode, lambda m: Neuron(neuron_params(m)))
    register(sj_layer.VotingLayer, _voting, shaped=True)
    register(sj_layer.Dropout, identity=True)
    register(sj_layer.SeqToANNContainer, container=True)
    register(sj_layer.MultiStepContainer, container=True)
    register(sj_functional.seq_to_ann_forward, module_call=sj_functional)
    register(sj_functional.multi_step_forward, module_call=sj_functional)
