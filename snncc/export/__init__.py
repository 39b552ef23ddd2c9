"""Export trained networks to a SpikeGraph.

* :mod:`snncc.export.rules` -- the rule table (module class -> op), ExportError, :func:`register`;
* :mod:`snncc.export.spikingjelly` -- spikingjelly's neurons and containers in that table;
* :mod:`snncc.export.trace` -- ``torch.fx`` tracing of a feedforward (or residual) module, BN folding;
* :mod:`snncc.export.rnn` -- the BSD-RNN's recurrent path (a delayed edge).

The package imports no training code (only :mod:`snncc.models.layers`, the building blocks).
``snncc.export(module, example_input, timesteps=T)`` calls :func:`export`: the package is callable
so that importing it does not hide the function of the same name on :mod:`snncc`.
"""
from __future__ import annotations

import sys
import types

from snncc.export.rnn import export_rnn
from snncc.export.rules import ExportError, register
from snncc.export.trace import export

__all__ = ["ExportError", "export", "export_rnn", "register"]


class _CallablePackage(types.ModuleType):
    def __call__(self, module, example_input, timesteps=None, **kwargs):
        return export(module, example_input, timesteps=timesteps, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
