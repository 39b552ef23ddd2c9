"""The BSD-RNN's Type 1 path as a recurrent SpikeGraph (App. C; the recurrent synapse as a delayed edge).

Takes a :class:`snncc.models.rnn.BSDRNN` (read through its attributes: ``task``, ``n_in``, ``hidden``,
``w_ih``, ``w_hh``, ``params1``); nothing here imports training code.
"""
from __future__ import annotations

from snncc.export.rules import ExportError
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Dense, Input, Neuron, Readout


def export_rnn(model, seq_len: int, name: str = "bsd-rnn", metadata: dict | None = None) -> SpikeGraph:
    """The Type 1 path as a recurrent SpikeGraph: one graph step per LIF step, ``model.steps_per_element`` (K)
    per sequence element, so ``timesteps`` is ``seq_len * K`` and each element is fed for K steps
    (``x.repeat_interleave(K, dim=1)``).

    ``Input(n_in, spike-coded) -> Dense W_ih -> Neuron hidden``, ``hidden -> Dense W_hh``
    whose current enters ``hidden`` through a delay-1 edge (W_hh s_{t-1}), and a
    spike-count readout of ``hidden``. Feed it (B, L, n_in) one-hot sequences. The
    analog readout o = W_ho h is not part of the graph (see the module docstring).
    """
    if model.task != "text":
        raise ExportError("only the text RNN exports: its inputs are one-hot spike trains; a time series is a "
                          "time-varying analog input, which no spike-graph Input encoding carries")
    w = lambda lin: lin.weight.detach().cpu().double().numpy()  # noqa: E731
    k = int(model.steps_per_element)
    meta = {"timesteps": int(seq_len) * k, "steps_per_element": k, "task": "text", "hidden": model.hidden,
            "readout": "spike counts of the hidden layer; the paper's output o_t = W_ho h_t is an analog "
                       "readout of the hidden current and is computed off-graph", **(metadata or {})}
    g = SpikeGraph(name, meta)
    g.add("input", Input((model.n_in,), encoding="spike"))
    g.add("w_ih", Dense(w(model.w_ih)), ["input"])
    g.add("hidden", Neuron(model.params1), ["w_ih"])
    g.add("w_hh", Dense(w(model.w_hh)), ["hidden"])
    g.connect("w_hh", "hidden", 1)  # recurrence: hidden receives W_hh s_{t-1}
    g.add("readout", Readout("count"), ["hidden"])
    g.infer()
    return g
