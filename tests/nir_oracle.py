"""An independent oracle for NIR graphs: a hand-written forward-Euler simulation of NIR's
documented ODEs, in float64, straight from the NIR node parameters (no snncc code).

LIF:     v += dt/tau (v_leak - v + r I);               z = v > v_threshold; v = v_reset where z
IF:      v += dt r I;                                  z, reset as LIF
LI, CubaLI, I: the same without firing; the output is v (LI/CubaLI start at v_leak, I at 0)
Threshold: z = x > threshold (no state)
Delay:   y(t) = x(t - delay) (whole steps), 0 before; Conv1d, Conv2d (stride, padding, dilation, groups),
         pools, Affine, Scale: as torch computes them
CubaLIF: I_s += dt/tau_syn (-I_s + w_in I);            (current first: snnTorch's/Lava's order)
         v += dt/tau_mem (v_leak - v + r I_s);         z, reset as LIF
Membranes start at v_reset, currents at 0. A node's inputs are summed; an edge that closes a
cycle (a back edge of a depth-first walk from the input, in edge order) delivers the previous
step's value.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _a(x):
    if hasattr(x, "detach"):
        x = x.detach().numpy()
    return np.asarray(x, np.float64)


def _pair(x):
    a = np.asarray(_a(x)).astype(int).reshape(-1)
    return (int(a[0]), int(a[-1]))


def back_edges(nodes, edges, root):
    succ = {n: [d for s, d in edges if s == n] for n in nodes}
    back, state, stack = set(), {root: 1}, [(root, iter(succ[root]))]
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
            stack.append((nxt, iter(succ[nxt])))
    return back


def simulate(graph, x, dt, record=()):
    """x: (B, T, *shape) input per step. Returns ({node: (T, B, ...) values for node in record}, output (T, B, ...))."""
    import nir
    nodes, edges = graph.nodes, list(graph.edges)
    (inp,) = [n for n, m in nodes.items() if isinstance(m, nir.Input)]
    (out,) = [n for n, m in nodes.items() if isinstance(m, nir.Output)]
    back = back_edges(nodes, edges, inp)
    order, done = [], set()
    while len(order) < len(nodes):  # topological order over same-step edges
        for n in nodes:
            if n not in done and all(s in done for s, d in edges if d == n and (s, d) not in back):
                order.append(n)
                done.add(n)
    B, T = x.shape[:2]
    prev, state = {}, {}
    rec = {n: [] for n in (*record, out)}
    for t in range(T):
        cur = {}
        for n in order:
            m = nodes[n]
            if isinstance(m, nir.Input):
                cur[n] = torch.as_tensor(x[:, t], dtype=torch.float64)
                continue
            ins = [cur[s] if (s, d) not in back else prev.get(s) for s, d in edges if d == n]
            ins = [v for v in ins if v is not None]
            val = ins[0]
            for v in ins[1:]:
                val = val + v
            cur[n] = _node(m, val, state.setdefault(n, {}), dt)
            if n in rec:
                rec[n].append(cur[n].numpy())
        prev = cur
    return {n: np.stack(v) for n, v in rec.items()}


def _node(m, x, st, dt):
    import nir
    t = lambda a: torch.as_tensor(_a(a))  # noqa: E731
    if isinstance(m, nir.Output):
        return x
    if isinstance(m, nir.Affine):
        return F.linear(x, t(m.weight), t(m.bias))
    if isinstance(m, nir.Linear):
        return F.linear(x, t(m.weight))
    if isinstance(m, nir.Scale):
        return x * t(m.scale)
    if isinstance(m, nir.Conv1d):
        one = lambda a: int(np.asarray(a).reshape(-1)[0])  # noqa: E731
        return F.conv1d(x, t(m.weight), t(m.bias), stride=one(m.stride), padding=one(m.padding),
                        dilation=one(m.dilation), groups=int(m.groups))
    if isinstance(m, nir.Threshold):
        return (x > t(m.threshold)).to(torch.float64)
    if isinstance(m, nir.Delay):  # y(t) = x(t - delay), delay in whole steps, 0 before
        steps = int(round(float(np.asarray(_a(m.delay)).reshape(-1)[0]) / dt))
        buf = st.setdefault("buf", [])
        buf.append(x)
        return buf[-1 - steps] if len(buf) > steps else torch.zeros_like(x)
    if isinstance(m, nir.Conv2d):
        return F.conv2d(x, t(m.weight), t(m.bias), stride=_pair(m.stride), padding=_pair(m.padding),
                        dilation=_pair(m.dilation), groups=int(m.groups))
    if isinstance(m, nir.AvgPool2d):
        return F.avg_pool2d(x, _pair(m.kernel_size), _pair(m.stride))
    if isinstance(m, nir.SumPool2d):
        k = _pair(m.kernel_size)
        return F.avg_pool2d(x, k, _pair(m.stride), divisor_override=1)
    if isinstance(m, nir.Flatten):
        return x.flatten(1)
    if isinstance(m, (nir.LI, nir.CubaLI, nir.I)):  # non-spiking: the output is v
        if isinstance(m, nir.I):
            v = st.get("v", torch.zeros_like(x)) + dt * t(m.r) * x
        elif isinstance(m, nir.LI):
            v = st.get("v", torch.zeros_like(x) + t(m.v_leak))
            v = v + dt / t(m.tau) * (t(m.v_leak) - v + t(m.r) * x)
        else:
            i = st.get("i", torch.zeros_like(x))
            i = st["i"] = i + dt / t(m.tau_syn) * (-i + t(m.w_in) * x)
            v = st.get("v", torch.zeros_like(x) + t(m.v_leak))
            v = v + dt / t(m.tau_mem) * (t(m.v_leak) - v + t(m.r) * i)
        st["v"] = v
        return v
    if isinstance(m, (nir.LIF, nir.IF, nir.CubaLIF)):
        v = st.get("v", torch.zeros_like(x) + t(m.v_reset))
        if isinstance(m, nir.LIF):
            v = v + dt / t(m.tau) * (t(m.v_leak) - v + t(m.r) * x)
        elif isinstance(m, nir.IF):
            v = v + dt * t(m.r) * x
        else:
            i = st.get("i", torch.zeros_like(x))
            i = i + dt / t(m.tau_syn) * (-i + t(m.w_in) * x)
            st["i"] = i
            v = v + dt / t(m.tau_mem) * (t(m.v_leak) - v + t(m.r) * i)
        z = (v > t(m.v_threshold)).to(torch.float64)
        st["v"] = torch.where(z > 0, t(m.v_reset) + torch.zeros_like(v), v)
        return z
    raise NotImplementedError(type(m).__name__)
