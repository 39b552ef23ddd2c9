"""spikingjelly's neurons and containers in the export rule table (LIFNode, IFNode, SeqToANNContainer)."""
from __future__ import annotations

from snncc.export.rules import ExportError, register
from snncc.ir.ops import Neuron
from snncc.neuron import HARD, IF, LIF, SOFT, NeuronParams

try:  # spikingjelly is a dependency, but keep the exporter importable without it
    from spikingjelly.activation_based import layer as sj_layer
    from spikingjelly.activation_based import neuron as sj_neuron
except ImportError:  # pragma: no cover
    sj_layer = sj_neuron = None


def neuron_params(m) -> NeuronParams:
    """snncc's parameters of a spikingjelly LIFNode / IFNode (anything else: ExportError)."""
    reset = SOFT if m.v_reset is None else HARD
    v_reset = 0.0 if m.v_reset is None else float(m.v_reset)
    if type(m) is sj_neuron.LIFNode:  # decay_input=False: MSKD eq. 1's form (snncc.neuron)
        return NeuronParams(LIF, float(m.tau), float(m.v_threshold), v_reset, reset, decay_input=bool(m.decay_input))
    if type(m) is sj_neuron.IFNode:
        return NeuronParams(IF, 2.0, float(m.v_threshold), v_reset, reset)
    raise ExportError(f"unsupported spikingjelly neuron {type(m).__name__} (LIFNode and IFNode are)")


if sj_neuron is not None:
    register(sj_neuron.BaseNode, lambda m: Neuron(neuron_params(m)))
    register(sj_layer.SeqToANNContainer, container=True)
