"""Spike graph -> NIR: the inverse of :mod:`snncc.nir.importer`, exact, or refused by node.

With the step ``dt`` (stored in the NIR graph's metadata as ``dt``; snncc's importer reads it
back, other tools assume their own: snnTorch 1e-4, Norse 1e-3), snncc's LIF (``tau`` steps,
hard reset) is NIR's LIF with ``tau = tau_steps * dt``, ``r = 1`` (``r = tau_steps`` for the LIF without
input decay, ``decay_input=False``: NIR's Euler step then adds the input as it is), ``v_leak = v_reset`` and
``v_threshold`` the next float64 *below* snncc's threshold (snncc fires on ``>=``, NIR on ``>``).
IF becomes NIR's IF with ``r = 1/dt``; the current-based LIF becomes CubaLIF (``w_in = 1``); a memoryless
LIF (``tau = 1``, resting at 0) becomes Threshold; an Integrator becomes LI, CubaLI or I. A delayed edge
that NIR reads as closing a cycle is a NIR cycle edge (one step into a population) plus a Delay node for
any further steps; any other delayed edge becomes a Delay node of its steps.
Time constants are stored so that ``tau / dt`` gives snncc's value back bit for bit where a float64
with that property exists (else within an ulp or two).
"""
from __future__ import annotations

import numpy as np

from snncc import fileio
from snncc.ir.graph import SpikeGraph
from snncc.ir.types import GraphError
from snncc.ir.ops import Conv, Dense, Flatten, Input, Integrator, Neuron, Pool, Readout
from snncc.nir.reading import back_edges


class NIRExportError(GraphError):
    """The spike graph has something NIR cannot express; the message names the node."""


def _times(steps: np.ndarray, dt: float, node: str, what: str) -> np.ndarray:
    """Seconds t with t / dt == steps exactly where such a float64 exists near steps * dt (else
    steps * dt, whose t / dt is then within an ulp or two of steps)."""
    out = np.array(steps * dt, np.float64)
    flat = out.reshape(-1)
    for i, s in enumerate(steps.reshape(-1)):
        t = cand = flat[i]
        for _ in range(4):
            if cand / dt == s:
                flat[i] = cand
                break
            cand = np.nextafter(cand, np.inf if cand / dt < s else -np.inf)
    return out


def _inverse_dt(dt: float, node: str) -> float:
    r = 1.0 / dt
    for cand in (r, np.nextafter(r, np.inf), np.nextafter(r, -np.inf)):
        if cand * dt == 1.0:
            return float(cand)
    raise NIRExportError(f"node {node!r}: IF needs r with r * dt == 1 exactly; none exists for dt={dt!r}")


def _neuron(n, op: Neuron, shape, dt):
    import nir
    prm = op.params
    p = op.per_neuron(shape)
    if prm.memoryless:  # tau = 1: fires iff x + v_rest >= v_th, no state (reset rule irrelevant)
        if op.current_based or (p["v_rest"] != 0).any():
            raise NIRExportError(f"node {n!r} (Neuron): a memoryless LIF (tau = 1) with a synaptic current or "
                                 f"v_reset != 0 has no exact NIR node (NIR's Threshold is x > threshold)")
        return nir.Threshold(threshold=np.nextafter(np.array(p["v_th"], np.float64), -np.inf))
    if prm.soft:
        raise NIRExportError(f"node {n!r} (Neuron): soft reset (reset by subtraction) has no NIR equivalent "
                             f"(NIR neurons reset to v_reset)")
    thr = np.nextafter(p["v_th"], -np.inf)  # snncc: h >= v_th  <=>  NIR: v > previous float
    v_reset = np.array(p["v_reset"], np.float64)
    ones = np.ones(shape)
    if not prm.leaky:
        return nir.IF(r=ones * _inverse_dt(dt, n), v_threshold=thr, v_reset=v_reset)
    tau = _times(np.array(p["tau"], np.float64), dt, n, "tau")
    r = _input_gain(prm, tau, dt)
    if op.current_based:
        tau_syn = _times(np.array(p["tau_syn"], np.float64), dt, n, "tau_syn")
        return nir.CubaLIF(tau_syn=tau_syn, tau_mem=tau, r=r, v_leak=v_reset.copy(), v_threshold=thr,
                           v_reset=v_reset, w_in=ones.copy())
    return nir.LIF(tau=tau, r=r, v_leak=v_reset.copy(), v_threshold=thr, v_reset=v_reset)


def _input_gain(prm, tau: np.ndarray, dt: float) -> np.ndarray:
    """NIR's r of a leaky population: 1 (the input scaled by dt/tau, snncc's decay_input) or tau/dt
    (the input added as it is: decay_input=False)."""
    return np.ones_like(tau) if prm.decay_input else tau / dt


def _edges(graph, nodes, ports_of, types, dt) -> list:
    """NIR edges of the graph's ports. NIR reads the edges that a depth-first walk from the input finds
    going back (:func:`snncc.nir.reading.back_edges`) as one-step cycle edges and every other edge as
    same-step: a delayed port on such an edge keeps its first step there (it must enter a population),
    and its other steps, or all steps of a delayed port elsewhere, become a Delay node on the edge."""
    import nir
    plain = [(p.src, n) for n, ports in ports_of.items() for p in ports]
    back = back_edges(nodes, plain, graph.input_nodes)
    edges = []
    for n, ports in ports_of.items():
        for i, p in enumerate(ports):
            steps = p.delay
            if (p.src, n) in back:
                if not steps or not isinstance(graph.op(n), (Neuron, Integrator)):
                    raise NIRExportError(f"node {n!r}: its input from {p.src!r} closes a cycle in NIR's reading "
                                         f"(a one-step edge into a population); here it is a "
                                         f"{'same-step' if not steps else 'delayed'} edge into a "
                                         f"{type(graph.op(n)).__name__}")
                steps -= 1
            src = p.src
            if steps:
                src = f"{n}.delay{i}"
                seconds = _times(np.array(float(steps)), dt, n, "delay").item()
                nodes[src] = nir.Delay(delay=np.full(types[p.src].shape, seconds))
                edges.append((p.src, src))
            edges.append((src, n))
    return edges


def to_nir(graph: SpikeGraph, dt: float = 1e-4):
    """A NIR graph (``nir.NIRGraph``, type-checked by nir) equal to ``graph`` with step ``dt`` seconds."""
    import nir
    dt = float(dt)
    if not (np.isfinite(dt) and dt > 0):
        raise NIRExportError(f"dt must be a positive number of seconds, got {dt}")
    types = graph.infer()
    nodes, ports_of = {}, {}
    for n in graph.order():
        op, ports = graph.op(n), graph.inputs(n)
        shape = types[n].shape
        in_shape = types[ports[0].src].shape if ports else None
        if isinstance(op, Input):
            if op.mean is not None:
                raise NIRExportError(f"node {n!r} (Input): input normalisation has no NIR node; "
                                     f"fold it into the first synapse before exporting")
            nodes[n] = nir.Input(input_type=np.array(shape))
        elif isinstance(op, Dense):
            w = np.asarray(op.weight, np.float64)
            nodes[n] = nir.Linear(weight=w) if op.bias is None else \
                nir.Affine(weight=w, bias=np.asarray(op.bias, np.float64))
        elif isinstance(op, Conv):
            w = np.asarray(op.weight, np.float64)
            bias = np.zeros(w.shape[0]) if op.bias is None else np.asarray(op.bias, np.float64)
            nodes[n] = nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=w, stride=tuple(op.stride),
                                  padding=tuple(op.padding), dilation=tuple(op.dilation), groups=int(op.groups),
                                  bias=bias)
        elif isinstance(op, Pool):
            if op.mode == "max":
                raise NIRExportError(f"node {n!r} (Pool): NIR has no max pooling")
            if op.mode == "avg" and tuple(op.padding) != (0, 0):
                raise NIRExportError(f"node {n!r} (Pool): NIR does not say whether average pooling counts "
                                     f"padding; padded average pooling is not exported")
            cls = nir.AvgPool2d if op.mode == "avg" else nir.SumPool2d
            nodes[n] = cls(kernel_size=np.array(op.kernel), stride=np.array(op.stride),
                           padding=np.array(op.padding))
        elif isinstance(op, Flatten):
            nodes[n] = nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1)
        elif isinstance(op, Neuron):
            nodes[n] = _neuron(n, op, shape, dt)
        elif isinstance(op, Integrator):
            prm, ones = op.params, np.ones(shape)
            v_leak = ones * prm.v_reset
            if not prm.leaky:
                nodes[n] = nir.I(r=ones * _inverse_dt(dt, n))
            elif prm.current_based:
                tau = _times(ones * prm.tau, dt, n, "tau")
                nodes[n] = nir.CubaLI(tau_syn=_times(ones * prm.tau_syn, dt, n, "tau_syn"), tau_mem=tau,
                                      r=_input_gain(prm, tau, dt), v_leak=v_leak, w_in=ones.copy())
            else:
                tau = _times(ones * prm.tau, dt, n, "tau")
                nodes[n] = nir.LI(tau=tau, r=_input_gain(prm, tau, dt), v_leak=v_leak)
        elif isinstance(op, Readout):
            nodes[n] = nir.Output(output_type=np.array(shape))
        else:
            raise NIRExportError(f"node {n!r} ({type(op).__name__}): no NIR equivalent "
                                 f"(NIR sums a node's inputs implicitly; an explicit {type(op).__name__} is not exported)")
        ports_of[n] = ports
    edges = _edges(graph, nodes, ports_of, types, dt)
    try:
        (inp,) = graph.input_nodes
        meta = {"dt": dt, "producer": "snncc", "input_encoding": graph.op(inp).encoding}
        meta.update({k: graph.metadata[k] for k in ("timesteps", "dataset") if k in graph.metadata})
        population = graph.readout_op().population
        if population != 1:  # NIR's Output has no class grouping: snncc's own key
            meta["readout_population"] = population
        # nir 1.0.8's type check takes a conv's input channels from weight.shape[1] (C_in / groups), so it
        # rejects every grouped conv: such graphs are built without it (read them with type_check=False)
        grouped = any(getattr(graph.op(n), "groups", 1) != 1 for n in graph.order())
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=not grouped)
    except (ValueError, AssertionError, NotImplementedError) as e:
        raise NIRExportError(f"nir rejected the exported graph: {str(e).splitlines()[0]}") from None


def write_nir(graph: SpikeGraph, path, dt: float = 1e-4, force: bool = False) -> None:
    """Write ``graph`` as a NIR (HDF5) file, atomically; an existing file is replaced only if snncc wrote it
    (its metadata says so) or ``force``."""
    import io

    import nir
    g = to_nir(graph, dt)
    buf = io.BytesIO()
    nir.write(buf, g)
    fileio.write_bytes(path, buf.getvalue(), kind="nir", force=force)
