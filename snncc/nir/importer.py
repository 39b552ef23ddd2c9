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

Per-neuron parameter arrays are kept (the Neuron op's arrays); populations whose values
are all equal get plain scalar parameters. A cycle in the NIR graph closes through a
one-step delayed edge (the edge that a depth-first walk from the input finds going back).
"""
from __future__ import annotations

import os

import networkx as nx
import numpy as np

from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Add, Conv, Dense, Flatten, Input, Integrator, Neuron, Pool, Readout
from snncc.ir.types import GraphError, Kind, TensorType
from snncc.neuron import IF, LIF, NeuronParams

REFUSED = {
    "Threshold": "a stateless threshold on analog values has no snncc IR op",
}


class NIRImportError(GraphError):
    """The NIR graph cannot be represented exactly; the message names the node and why."""


def _arr(x) -> np.ndarray:
    if hasattr(x, "detach"):  # snnTorch leaves torch tensors in the graph it returns
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _pair(x, node, what) -> tuple:
    a = np.asarray(_arr(x)).astype(np.int64).reshape(-1)
    if a.size == 1:
        return (int(a[0]), int(a[0]))
    if a.size == 2:
        return (int(a[0]), int(a[1]))
    raise NIRImportError(f"node {node!r}: {what} {a.tolist()} is not one or two integers")


def _fit(a, shape) -> np.ndarray:
    """Broadcast a parameter to a population shape; a 1-D convolution's (C, L) values also fit its (C, 1, L)."""
    a = np.asarray(a)
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        if a.size == int(np.prod(shape)) and tuple(d for d in a.shape if d != 1) == tuple(d for d in shape if d != 1):
            return a.reshape(shape)
        raise


def read(path):
    """nir.read with one-line errors."""
    import nir
    if not os.path.isfile(path):
        raise NIRImportError(f"cannot read NIR file {path}: no such file")
    try:
        return nir.read(path)
    except Exception as e:  # noqa: BLE001 -- h5py/nir raise many types on bad files
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NIRImportError(f"{path}: not a readable NIR file ({type(e).__name__}: {text})") from None


def _flatten(graph, prefix=""):
    """Inline nested NIRGraphs: returns ({name: node}, [(src, dst)]) with sub-graph Input/Output
    nodes kept as pass-through nodes (type name '_pass')."""
    import nir
    nodes, edges, subs = {}, [], {}
    for name, node in graph.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = _flatten(node, full + ".")
            ins = [full + "." + n for n, m in node.nodes.items() if isinstance(m, nir.Input)]
            outs = [full + "." + n for n, m in node.nodes.items() if isinstance(m, nir.Output)]
            for n in ins + outs:
                sub_nodes[n] = "_pass"
            nodes.update(sub_nodes)
            edges.extend(sub_edges)
            subs[full] = (ins, outs)
        else:
            nodes[full] = node
    for src, dst in graph.edges:
        src, dst = prefix + src, prefix + dst
        srcs = subs[src][1] if src in subs else [src]
        dsts = subs[dst][0] if dst in subs else [dst]
        for s in srcs:
            for d in dsts:
                if s not in nodes or d not in nodes:
                    raise NIRImportError(f"edge {s!r} -> {d!r}: unknown node")
                edges.append((s, d))
    return nodes, edges


def _contract(nodes, edges):
    """Remove pass-through nodes (sub-graph ports, nir Identity), joining their edges."""
    passing = [n for n, m in nodes.items() if m == "_pass" or type(m).__name__ == "Identity"]
    for p in passing:
        ins = [s for s, d in edges if d == p]
        outs = [d for s, d in edges if s == p]
        edges = [(s, d) for s, d in edges if p not in (s, d)] + [(s, d) for s in ins for d in outs]
        del nodes[p]
    return nodes, edges


class _Builder:
    def __init__(self, nodes, edges, dt, encoding, name):
        self.nodes, self.edges, self.dt, self.encoding = nodes, edges, dt, encoding
        self.g = SpikeGraph(name, {"source": "nir", "nir.dt": dt})
        self.alias: dict[str, str] = {}  # NIR node -> snncc node carrying its value
        self.types: dict[str, TensorType] = {}  # snncc node -> type
        self.succ = {n: [d for s, d in edges if s == n] for n in nodes}
        self.pending_late: list = []  # (NIR source, population): cycle edges, connected delayed at the end
        self.delay_of: dict[str, int] = {}  # NIR Delay node (one step) -> 1: its consumers read at t-1

    def fail(self, node, msg):
        raise NIRImportError(f"node {node!r} ({type(self.nodes[node]).__name__}): {msg}")

    def add(self, name, op, ports=()):
        try:
            t = op.infer(name, [self.types[p.src if hasattr(p, "src") else p] for p in ports])
        except GraphError as e:
            raise NIRImportError(str(e)) from None
        self.g.add(name, op, ports)
        self.types[name] = t
        return name

    def delayed_edges(self, inputs):
        """Back edges of a depth-first walk from the inputs, in edge order: they close cycles."""
        back, state = set(), {}
        for root in inputs:
            if root in state:
                continue
            stack = [(root, iter(self.succ[root]))]
            state[root] = 1
            while stack:
                n, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[n] = 2
                    stack.pop()
                elif state.get(nxt) == 1:
                    back.add((n, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, iter(self.succ[nxt])))
        return back

    def build(self):
        import nir
        inputs = [n for n, m in self.nodes.items() if isinstance(m, nir.Input)]
        outputs = [n for n, m in self.nodes.items() if isinstance(m, nir.Output)]
        if len(inputs) != 1 or len(outputs) != 1:
            raise NIRImportError(f"snncc graphs have one input and one output; the NIR graph has "
                                 f"{len(inputs)} Input and {len(outputs)} Output nodes")
        unreached = set(self.nodes) - set(nx.descendants(nx.DiGraph(self.edges), inputs[0])) - set(inputs) \
            if self.edges else set(self.nodes) - set(inputs)
        if unreached:
            raise NIRImportError(f"node {sorted(unreached)[0]!r}: not reachable from the input {inputs[0]!r}")
        back = self.delayed_edges(inputs)
        dag = nx.DiGraph()
        dag.add_nodes_from(self.nodes)
        dag.add_edges_from(e for e in self.edges if e not in back)
        index = {n: i for i, n in enumerate(self.nodes)}
        self.back = back
        for n in nx.lexicographical_topological_sort(dag, key=index.get):
            self.node(n)
        return self.g

    def ports(self, n):
        from snncc.ir.graph import Port
        out = []
        for s, d in self.edges:
            if d == n:
                delayed = (s, d) in self.back
                if not delayed and s not in self.alias:
                    self.fail(n, f"input {s!r} is not available")
                out.append((s, delayed))
        same = [Port(self.alias[s], self.delay_of.get(s, 0)) for s, dl in out if not dl]
        late = [(s, 1) for s, dl in out if dl]
        for s, _ in late:
            if self.delay_of.get(s):
                self.fail(n, f"the cycle through {s!r} adds a Delay to the one-step recurrent delay")
        return same, late

    def single(self, n):
        """The one same-step snncc source of a non-neuron node (several NIR inputs are summed by an Add)."""
        same, late = self.ports(n)
        if late:
            self.fail(n, "a recurrent cycle must close into a neuron population (LIF, IF, CubaLIF)")
        if not same:
            self.fail(n, "has no input")
        if len(same) == 1:
            return same[0]
        from snncc.ir.graph import Port
        return Port(self.add(f"{n}.sum", Add(), same))

    # -- nodes ------------------------------------------------------------------
    def node(self, n):
        import nir
        m = self.nodes[n]
        kind = type(m).__name__
        if kind in REFUSED:
            self.fail(n, REFUSED[kind])
        handler = getattr(self, "_" + kind.lower(), None)
        if handler is None or isinstance(m, nir.NIRGraph):
            self.fail(n, "no snncc equivalent for this NIR node type")
        handler(n, m)

    def _input(self, n, m):
        shape = tuple(int(d) for d in np.asarray(m.input_type["input"]).reshape(-1))
        self.alias[n] = self.add(n, Input(shape, encoding=self.encoding))

    def _output(self, n, m):
        port = self.single(n)
        src = port.src
        mode = "mean" if self.types[src].kind is Kind.ANALOG else "count"
        self.alias[n] = self.add(n, Readout(mode), [port])

    def _affine(self, n, m, bias=True):
        port = self.single(n)
        src = port.src
        w = _arr(m.weight)
        if w.ndim != 2:
            self.fail(n, f"weight of shape {list(w.shape)}: only 2-D (out, in) weights are supported")
        if len(self.types[src].shape) != 1:
            self.fail(n, f"input of shape {list(self.types[src].shape)}: NIR applies it to the last axis; "
                         f"snncc's Dense needs a vector (add a Flatten)")
        b = _arr(m.bias).reshape(-1) if bias else None
        self.alias[n] = self.add(n, Dense(w, b), [port])

    def _linear(self, n, m):
        self._affine(n, m, bias=False)

    def _conv2d(self, n, m):
        port = self.single(n)
        src = port.src
        w = _arr(m.weight)
        if int(m.groups) != 1:
            self.fail(n, f"groups={int(m.groups)}: snncc's Conv has groups=1")
        if _pair(m.dilation, n, "dilation") != (1, 1):
            self.fail(n, f"dilation {list(_pair(m.dilation, n, 'dilation'))}: snncc's Conv has dilation 1")
        stride = _pair(m.stride, n, "stride")
        if isinstance(m.padding, str):
            if m.padding == "valid":
                padding = (0, 0)
            elif stride == (1, 1) and all(k % 2 == 1 for k in w.shape[2:]):
                padding = ((w.shape[2] - 1) // 2, (w.shape[3] - 1) // 2)
            else:
                self.fail(n, "padding 'same' needs stride 1 and odd kernels to be a symmetric padding")
        else:
            padding = _pair(m.padding, n, "padding")
        bias = None if m.bias is None else _arr(m.bias).reshape(-1)
        self.alias[n] = self.add(n, Conv(w, bias, stride, padding), [port])

    def _pool(self, n, m, mode):
        port = self.single(n)
        src = port.src
        kernel = _pair(m.kernel_size, n, "kernel_size")
        stride = _pair(m.stride, n, "stride") if m.stride is not None else kernel
        padding = _pair(m.padding, n, "padding") if m.padding is not None else (0, 0)
        if mode == "avg" and padding != (0, 0):
            self.fail(n, "average pooling with padding: NIR does not say whether padding counts")
        self.alias[n] = self.add(n, Pool(mode, kernel, stride, padding), [port])

    def _conv1d(self, n, m):
        """A 1-D convolution runs as snncc's Conv on (C, 1, L): kernel (1, k), stride (1, s), padding (0, p)."""
        port = self.single(n)
        src = port.src
        w = _arr(m.weight)
        if int(m.groups) != 1:
            self.fail(n, f"groups={int(m.groups)}: snncc's Conv has groups=1")
        if int(np.asarray(m.dilation).reshape(-1)[0]) != 1:
            self.fail(n, "dilation != 1: snncc's Conv has dilation 1")
        shape = self.types[src].shape
        if len(shape) == 2 and isinstance(self.g.op(src), Input) and \
                all(isinstance(self.nodes[d], type(m)) for d in self.succ[self._nir_of(src)]):
            inp = self.g.op(src)  # present the (C, L) input as (C, 1, L); data of either shape is accepted
            self.g.replace_op(src, Input((shape[0], 1, shape[1]), encoding=inp.encoding))
            self.types[src] = TensorType(self.types[src].kind, (shape[0], 1, shape[1]))
        elif not (len(shape) == 3 and shape[1] == 1):
            self.fail(n, f"input of shape {list(shape)}: a 1-D convolution needs (C, L) from the input or "
                         f"another 1-D convolution")
        stride = int(np.asarray(m.stride).reshape(-1)[0])
        if isinstance(m.padding, str):
            if m.padding == "valid":
                pad = 0
            elif stride == 1 and w.shape[2] % 2 == 1:
                pad = (w.shape[2] - 1) // 2
            else:
                self.fail(n, "padding 'same' needs stride 1 and an odd kernel to be a symmetric padding")
        else:
            pad = int(np.asarray(m.padding).reshape(-1)[0])
        bias = None if m.bias is None else _arr(m.bias).reshape(-1)
        self.alias[n] = self.add(n, Conv(w[:, :, None, :], bias, (1, stride), (0, pad)), [port])

    def _nir_of(self, snncc_name):
        return next(a for a, b in self.alias.items() if b == snncc_name)

    def _delay(self, n, m):
        """A delay of one step is a delayed (t-1) edge; of zero steps, a pass-through."""
        port = self.single(n)
        steps = _arr(m.delay) / self.dt
        if (steps == 0).all():
            self.alias[n], self.delay_of[n] = port.src, port.delay
            return
        if not (np.abs(steps - 1.0) <= 1e-9).all():
            self.fail(n, f"delays of {sorted(set(np.round(steps.reshape(-1), 6)))[:3]} steps: snncc edges delay "
                         f"by 0 or 1 step (dt={self.dt:g}), the same for every element")
        if port.delay:
            self.fail(n, "two delays in a row exceed the one-step delay of an snncc edge")
        self.alias[n], self.delay_of[n] = port.src, 1

    def _avgpool2d(self, n, m):
        self._pool(n, m, "avg")

    def _sumpool2d(self, n, m):
        self._pool(n, m, "sum")

    def _flatten(self, n, m):
        port = self.single(n)
        src = port.src
        shape = self.types[src].shape
        start, end = int(m.start_dim), int(m.end_dim)
        nd = len(shape)
        s, e = start % nd if nd else 0, end % nd if nd else 0
        if nd > 1 and not (s == 0 and e == nd - 1):
            self.fail(n, f"flattening axes {start}..{end} of {list(shape)} is partial; snncc's Flatten "
                         f"flattens the whole sample")
        self.alias[n] = self.add(n, Flatten(), [port])

    def _scale(self, n, m):
        port = self.single(n)
        src = port.src
        op = self.g.op(src)
        s = _arr(m.scale)
        preds = [a for a, b in self.edges if b == n]
        owner = preds[0] if len(preds) == 1 else None
        if port.delay or not isinstance(op, (Dense, Conv)) or owner is None or self.succ[owner] != [n]:
            self.fail(n, "Scale is folded into the synapse (Affine, Linear, Conv2d) feeding only it; "
                         "here it follows something else")
        shape = self.types[src].shape
        try:
            s = _fit(s, shape)
        except ValueError:
            self.fail(n, f"scale of shape {list(np.shape(m.scale))} does not match {list(shape)}")
        rows = self._row_values(n, s, op)
        self.g.replace_op(src, self._scaled(op, rows))
        self.alias[n] = src

    def _row_values(self, n, values, op):
        """Per-output-row values of a Dense/Conv (Conv: must be constant over each channel)."""
        if isinstance(op, Dense):
            return np.asarray(values).reshape(-1)
        per_c = np.asarray(values).reshape(values.shape[0], -1)
        if not (per_c == per_c[:, :1]).all():
            self.fail(n, "a per-position value behind a convolution cannot be folded into its per-channel "
                         "weights and bias")
        return per_c[:, 0]

    @staticmethod
    def _scaled(op, rows, add=None):
        shape = (-1,) + (1,) * (op.weight.ndim - 1)
        w = op.weight * rows.reshape(shape)
        b = None if op.bias is None else op.bias * rows
        if add is not None:
            b = (np.zeros(op.weight.shape[0]) if b is None else b) + add
        kw = {"stride": op.stride, "padding": op.padding} if isinstance(op, Conv) else {}
        return type(op)(w, b, **kw)

    # -- neurons ----------------------------------------------------------------
    def _neuron(self, n, model, tau, k, v_leak, v_th, v_reset, tau_syn=None):
        same, late = self.ports(n)
        if not same:
            self.fail(n, "a recurrent input must enter a population that also has a same-step input")
        shapes = {self.types[p.src].shape for p in same}
        if len(shapes) != 1:
            self.fail(n, f"inputs of different shapes {sorted(map(list, shapes))}")
        shape = shapes.pop()
        try:
            vals = {key: _fit(_arr(a), shape).astype(np.float64)
                    for key, a in (("k", k), ("v_leak", v_leak), ("v_th", v_th), ("v_reset", v_reset),
                                   ("tau", tau if tau is not None else 2.0),
                                   ("tau_syn", tau_syn if tau_syn is not None else self.dt))}
        except ValueError:
            self.fail(n, f"parameter shapes do not match its input {list(shape)}")
        if not (np.isfinite(vals["k"]).all() and (vals["k"] > 0).all()):
            self.fail(n, "r (and w_in) must be finite and > 0")
        tau_s = vals["tau"] / self.dt
        tau_syn_s = vals["tau_syn"] / self.dt
        kk = vals["k"]
        decay_input = not (model == LIF and (kk == tau_s).all())
        if not decay_input:  # r = tau/dt: the Euler step adds r dt/tau I = I as it is, on v itself
            kk = np.ones_like(kk)
        u_th = np.nextafter(vals["v_th"] / kk, np.inf)  # v > thr  <=>  u >= next float above thr / k
        u_reset, u_leak = vals["v_reset"] / kk, vals["v_leak"] / kk
        if model == LIF and not (tau_s > 1.0).all():
            self.fail(n, f"tau must exceed dt={self.dt:g} (tau/dt = {tau_s.min():g}): the Euler step "
                         f"would overshoot")
        if tau_syn is not None and not (tau_syn_s >= 1.0).all():
            self.fail(n, f"tau_syn must be at least dt={self.dt:g} (tau_syn/dt = {tau_syn_s.min():g})")
        if not (u_th > u_reset).all():
            self.fail(n, "v_threshold must exceed v_reset")
        bias = u_leak - u_reset if model == LIF else np.zeros(shape)
        if (bias != 0).any():
            if tau_syn is not None:
                self.fail(n, "v_leak != v_reset with a synaptic current is not representable (the "
                             "difference would pass through the current filter)")
            self._fold_bias(n, same, bias)
        arrays = {"tau": tau_s, "v_th": u_th, "v_reset": u_reset, "tau_syn": tau_syn_s}

        def scalar(a):
            return float(a.reshape(-1)[0])
        try:
            params = NeuronParams(model, scalar(tau_s) if model == LIF else 2.0, scalar(u_th),
                                  scalar(u_reset), tau_syn=scalar(tau_syn_s) if tau_syn is not None else 1.0,
                                  decay_input=decay_input)
        except ValueError as e:
            self.fail(n, str(e))
        kw = {}
        for key, a in arrays.items():
            if key == "tau" and model != LIF or key == "tau_syn" and tau_syn is None:
                continue
            if not (a == a.reshape(-1)[0]).all():
                kw[key] = np.ascontiguousarray(a)
        self.alias[n] = self.add(n, Neuron(params, **kw), same)
        for s, _ in late:
            self.pending_late.append((s, n))

    def _fold_bias(self, n, same, bias):
        for p in same:
            if p.delay:  # a delayed edge delivers 0 at t=0: a constant cannot ride on it
                continue
            op = self.g.op(p.src)
            owners = {a for a in self.nodes if self.alias.get(a) == p.src}
            if isinstance(op, (Dense, Conv)) and all(set(self.succ[o]) <= owners | {n} for o in owners):
                rows = self._row_values(n, bias, op)
                self.g.replace_op(p.src, self._scaled(op, np.ones_like(rows), add=rows))
                return
        self.fail(n, "v_leak != v_reset needs a synapse (Affine, Linear, Conv2d) feeding only this "
                     "population to carry the difference as a bias")

    # -- non-spiking integrators (analog output: the membrane potential itself) ---------
    def _integrator(self, n, model, gain, v_leak, tau=None, tau_syn=None):
        """LI / CubaLI / I: the output is v, so r (and w_in, dt for I) cannot rescale the state; the
        input gain is folded into the rows of the synapse that feeds only this node instead."""
        same, late = self.ports(n)
        if late or len(same) != 1:
            self.fail(n, "an integrator is imported with exactly one same-step input (a synapse)")
        (port,) = same
        shape = self.types[port.src].shape
        try:
            vals = {k: _fit(_arr(a), shape).astype(np.float64) for k, a in
                    (("gain", gain), ("v_leak", v_leak), ("tau", 2.0 * self.dt if tau is None else tau),
                     ("tau_syn", self.dt if tau_syn is None else tau_syn))}
        except ValueError:
            self.fail(n, f"parameter shapes do not match its input {list(shape)}")
        for k in ("v_leak", "tau", "tau_syn"):
            if not (vals[k] == vals[k].reshape(-1)[0]).all():
                self.fail(n, f"per-neuron {k} in an integrator is not supported (only r and w_in may vary)")
        first = {k: float(a.reshape(-1)[0]) for k, a in vals.items()}
        gain = vals["gain"]
        tau_s, tau_syn_s = first["tau"] / self.dt, first["tau_syn"] / self.dt
        decay_input = not (model == LIF and (gain == tau_s).all())
        if not decay_input:  # r = tau/dt: the input enters v as it is (snncc's decay_input=False)
            gain = np.ones_like(gain)
        if not (np.isfinite(gain).all() and (gain > 0).all()):
            self.fail(n, "r (and w_in) must be finite and > 0")
        if (gain != 1.0).any():
            op = self.g.op(port.src)
            owners = {a for a in self.nodes if self.alias.get(a) == port.src}
            if port.delay or not isinstance(op, (Dense, Conv)) or \
                    not all(set(self.succ[o]) <= owners | {n} for o in owners):
                self.fail(n, "its input gain (r, w_in, dt) must fold into a synapse (Affine, Linear, Conv2d) "
                             "feeding only it")
            self.g.replace_op(port.src, self._scaled(op, self._row_values(n, gain, op)))
        if model == LIF and not tau_s > 1.0:
            self.fail(n, f"tau must exceed dt={self.dt:g} (tau/dt = {tau_s:g})")
        if tau_syn is not None and not tau_syn_s >= 1.0:
            self.fail(n, f"tau_syn must be at least dt={self.dt:g}")
        params = NeuronParams(model, tau_s if model == LIF else 2.0, float("inf"), first["v_leak"],
                              tau_syn=tau_syn_s if tau_syn is not None else 1.0, decay_input=decay_input)
        self.alias[n] = self.add(n, Integrator(params), [port])

    def _li(self, n, m):
        self._integrator(n, LIF, m.r, m.v_leak, tau=m.tau)

    def _cubali(self, n, m):
        self._integrator(n, LIF, _arr(m.r) * _arr(m.w_in), m.v_leak, tau=m.tau_mem, tau_syn=m.tau_syn)

    def _i(self, n, m):
        r = _arr(m.r)
        self._integrator(n, IF, r * self.dt, np.zeros_like(r))

    def _lif(self, n, m):
        self._neuron(n, LIF, m.tau, m.r, m.v_leak, m.v_threshold, m.v_reset)

    def _if(self, n, m):
        r = _arr(m.r)
        self._neuron(n, IF, None, r * self.dt, np.zeros_like(r), m.v_threshold, m.v_reset)

    def _cubalif(self, n, m):
        self._neuron(n, LIF, m.tau_mem, _arr(m.r) * _arr(m.w_in), m.v_leak, m.v_threshold, m.v_reset,
                     tau_syn=m.tau_syn)


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
    nodes, edges = _contract(*_flatten(graph))
    b = _Builder(nodes, edges, dt, encoding, name)
    g = b.build()
    for src, dst in b.pending_late:
        g.connect(b.alias[src], dst, 1)
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
