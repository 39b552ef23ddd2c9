"""NIR -> spike graph: build snncc's IR from a NIR graph, exactly, or refuse by node.

NIR neurons are ODEs; with the simulation step ``dt`` (not stored in NIR files: the caller
gives it) their forward-Euler step is snncc's neuron update (:mod:`snncc.neuron`):

* LIF ``tau v' = (v_leak - v) + r I``: in the rescaled state ``u = v / r`` the step is
  ``u += (I + u_leak - u) / tau_s`` with ``tau_s = tau / dt``: snncc's LIF with the input
  current ``I``, ``tau = tau_s``, ``v_reset = v_reset / r``, ``v_th = v_threshold / r`` and
  ``u_leak - u_reset`` added to the input (folded into the bias of the synapse that feeds
  the population). The spikes are the same; ``r`` never touches the weights, so
  per-neuron ``r`` works behind convolutions too. Where ``r == tau / dt`` exactly (every
  neuron), the step adds ``I`` as it is to ``v`` itself: snncc's LIF without input decay
  (``decay_input=False``, what snncc exports), with no rescaling.
* IF ``v' = r I``: ``u = v / (r dt)`` gives ``u += I``: snncc's IF.
* CubaLIF ``tau_syn I' = -I + w_in S``, ``tau_mem v' = (v_leak - v) + r I``: the current is
  updated first and the membrane integrates the new current (snnTorch's and Lava's
  order); ``u = v / (r w_in)`` gives snncc's current-based LIF with ``tau_syn / dt``.
* NIR fires on ``v > v_threshold``, snncc on ``h >= v_th``: the imported threshold is the
  next float64 above ``v_threshold / r`` (backends compare in float64), so the two agree
  for every float64 membrane value.
* Threshold ``s = x > threshold`` (stateless): snncc's LIF with ``tau = 1`` step, which keeps no
  memory (``h = x + 0``, formed exactly: :func:`snncc.neuron.charge`), and the threshold's next
  float64 above.
* Delay ``y(t) = x(t - d)``: an edge delayed by ``d / dt`` whole steps (the same for every
  element; delays in a row add up, a Delay closing a cycle adds to the cycle's one step).
* Conv1d/Conv2d: stride, padding (ints, ``valid``, ``same`` when symmetric), dilation, groups map
  onto snncc's Conv (a 1-D conv on a (C, 1, L) layout).

Per-neuron parameter arrays are kept (the Neuron op's arrays); populations whose values
are all equal get plain scalar parameters. A cycle in the NIR graph closes through a
one-step delayed edge (the edge that a depth-first walk from the input finds going back).

Layout: :mod:`.reading` (file, nested graphs, conversions), :mod:`.builder` (the walk and the
bookkeeping rules share), :mod:`.synapses` and :mod:`.neurons` (one rule per NIR node type,
listed in :data:`RULES`), this module (:func:`from_nir`).
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from snncc.ir.graph import SpikeGraph
from snncc.ir.schema import MAX_DIM
from snncc.ir.types import GraphError
from snncc.nir import neurons, synapses
from snncc.nir.builder import Builder
from snncc.nir.reading import NIRImportError, contract, flatten, read

__all__ = ["from_nir", "NIRImportError", "RULES"]

RULES = {  # NIR node class name -> rule(builder, name, node); any other node type is refused by name
    "Input": synapses.input_, "Output": synapses.output, "Affine": synapses.affine, "Linear": synapses.linear,
    "Conv1d": synapses.conv1d, "Conv2d": synapses.conv2d, "AvgPool2d": synapses.avgpool2d,
    "SumPool2d": synapses.sumpool2d, "Flatten": synapses.flatten, "Scale": synapses.scale, "Delay": synapses.delay,
    "LIF": neurons.lif, "IF": neurons.if_, "CubaLIF": neurons.cubalif, "Threshold": neurons.threshold,
    "LI": neurons.li, "CubaLI": neurons.cubali, "I": neurons.i,
}


def from_nir(graph_or_path, dt: float | None = None, encoding: str | None = None,
             name: str | None = None) -> SpikeGraph:
    """Build a SpikeGraph from a NIR graph (or a .nir file). ``dt``: the simulation step in
    seconds (NIR files do not store it: snnTorch exports assume 1e-4, Norse 1e-3); falls back to
    a ``dt`` entry in the graph's metadata. ``encoding``: 'direct' (the analog input is presented
    at every step) or 'spike' (the input is a spike train); default: the metadata's
    ``input_encoding`` (snncc writes it) else 'direct'."""
    graph = read(str(graph_or_path)) if isinstance(graph_or_path, (str, os.PathLike)) else graph_or_path
    if name is None:
        name = os.path.basename(str(graph_or_path)).split(".")[0] if isinstance(graph_or_path, (str, os.PathLike)) \
            else "nir"
    meta = getattr(graph, "metadata", None)
    meta = meta if isinstance(meta, dict) else {}
    if encoding is None:
        encoding = meta.get("input_encoding", "direct")
        encoding = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
    if dt is None:
        dt = meta.get("dt")
        if dt is None:
            raise NIRImportError("NIR files do not store the time step: pass dt (--dt; snnTorch's exporter "
                                 "assumes 1e-4 s, Norse 1e-3 s)")
    dt = float(np.asarray(dt))
    if not (np.isfinite(dt) and dt > 0):
        raise NIRImportError(f"dt must be a positive number of seconds, got {dt}")
    if encoding not in ("direct", "spike"):
        raise NIRImportError(f"unknown input encoding {encoding!r} (expected 'direct' or 'spike')")
    g = Builder(*contract(*flatten(graph)), dt, encoding, name, RULES).build()
    _carry_run_metadata(meta, g)
    try:
        g.infer()
    except GraphError as e:
        raise NIRImportError(str(e)) from None
    return g


def _carry_run_metadata(meta: dict, g: SpikeGraph) -> None:
    """snncc's own NIR files also carry the run's step count and dataset (NIR has no field for them);
    they come back only when they are well-formed."""
    t, ds = meta.get("timesteps"), meta.get("dataset")
    t = t.item() if isinstance(t, np.generic) or (isinstance(t, np.ndarray) and t.size == 1) else t
    ds = ds.decode() if isinstance(ds, bytes) else ds
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool) and 1 <= int(t) <= 100_000:
        g.metadata["timesteps"] = int(t)
    if isinstance(ds, str) and 0 < len(ds) <= 64:
        g.metadata["dataset"] = ds
    p = meta.get("readout_population")  # output neurons per class, written only when > 1
    p = p.item() if isinstance(p, np.generic) or (isinstance(p, np.ndarray) and p.size == 1) else p
    if isinstance(p, (int, np.integer)) and not isinstance(p, bool) and 1 < int(p) <= MAX_DIM:
        for n in g.output_nodes:
            g.replace_op(n, dataclasses.replace(g.op(n), population=int(p)))
