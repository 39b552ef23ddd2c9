"""Importer rules for NIR's neurons: LIF, IF, CubaLIF, Threshold (spiking populations: snncc's
Neuron) and LI, CubaLI, I (non-spiking: snncc's Integrator). Each is ``rule(builder, name, nir_node)``;
the derivations are in :mod:`snncc.nir.importer`'s docstring."""
from __future__ import annotations

import numpy as np

from snncc.ir.ops import Integrator, Neuron
from snncc.neuron import IF, LIF, NeuronParams
from snncc.nir.reading import arr, fit


def _population(b, n, model, tau, k, v_leak, v_th, v_reset, tau_syn=None, memoryless=False):
    """A Neuron on the state u = v / k; ``tau``, ``tau_syn`` in seconds. ``memoryless``: snncc's LIF
    with tau = 1 step (no state: any threshold)."""
    same, late = b.ports(n)
    if not same:
        b.fail(n, "a recurrent input must enter a population that also has a same-step input")
    shapes = {b.types[p.src].shape for p in same}
    if len(shapes) != 1:
        b.fail(n, f"inputs of different shapes {sorted(map(list, shapes))}")
    shape = shapes.pop()
    try:
        vals = {key: fit(arr(a), shape).astype(np.float64)
                for key, a in (("k", k), ("v_leak", v_leak), ("v_th", v_th), ("v_reset", v_reset),
                               ("tau", tau if tau is not None else 2.0),
                               ("tau_syn", tau_syn if tau_syn is not None else b.dt))}
    except ValueError:
        b.fail(n, f"parameter shapes do not match its input {list(shape)}")
    if not (np.isfinite(vals["k"]).all() and (vals["k"] > 0).all()):
        b.fail(n, "r (and w_in) must be finite and > 0")
    tau_s = np.ones(shape) if memoryless else vals["tau"] / b.dt
    tau_syn_s = vals["tau_syn"] / b.dt
    kk = vals["k"]
    decay_input = memoryless or not (model == LIF and (kk == tau_s).all())
    if not decay_input:  # r = tau/dt: the Euler step adds r dt/tau I = I as it is, on v itself
        kk = np.ones_like(kk)
    u_th = np.nextafter(vals["v_th"] / kk, np.inf)  # v > thr  <=>  u >= next float above thr / k
    u_reset, u_leak = vals["v_reset"] / kk, vals["v_leak"] / kk
    if model == LIF and not memoryless and not (tau_s > 1.0).all():
        b.fail(n, f"tau must exceed dt={b.dt:g} (tau/dt = {tau_s.min():g}): the Euler step would overshoot")
    if tau_syn is not None and not (tau_syn_s >= 1.0).all():
        b.fail(n, f"tau_syn must be at least dt={b.dt:g} (tau_syn/dt = {tau_syn_s.min():g})")
    if not memoryless and not (u_th > u_reset).all():
        b.fail(n, "v_threshold must exceed v_reset")
    bias = u_leak - u_reset if model == LIF else np.zeros(shape)
    if (bias != 0).any():
        if tau_syn is not None:
            b.fail(n, "v_leak != v_reset with a synaptic current is not representable (the "
                      "difference would pass through the current filter)")
        _fold_bias(b, n, same, bias)
    arrays = {"tau": tau_s, "v_th": u_th, "v_reset": u_reset, "tau_syn": tau_syn_s}

    def scalar(a):
        return float(a.reshape(-1)[0])
    try:
        params = NeuronParams(model, scalar(tau_s) if model == LIF else 2.0, scalar(u_th),
                              scalar(u_reset), tau_syn=scalar(tau_syn_s) if tau_syn is not None else 1.0,
                              decay_input=decay_input)
    except ValueError as e:
        b.fail(n, str(e))
    kw = {}
    for key, a in arrays.items():
        if key == "tau" and model != LIF or key == "tau_syn" and tau_syn is None:
            continue
        if not (a == a.reshape(-1)[0]).all():
            kw[key] = np.ascontiguousarray(a)
    b.alias[n] = b.add(n, Neuron(params, **kw), same)
    for s, d in late:
        b.pending_late.append((s, n, d))


def _fold_bias(b, n, same, bias):
    for p in same:  # a delayed edge delivers 0 before its first value: a constant cannot ride on it
        op = b.owned_synapse(n, p)
        if op is not None:
            rows = b.row_values(n, bias, op)
            b.fold_rows(p.src, np.ones_like(rows), add=rows)
            return
    b.fail(n, "v_leak != v_reset needs a synapse (Affine, Linear, Conv) feeding only this "
              "population to carry the difference as a bias")


def _integrator(b, n, model, gain, v_leak, tau=None, tau_syn=None):
    """LI / CubaLI / I: the output is v, so r (and w_in, dt for I) cannot rescale the state; the
    input gain is folded into the rows of the synapse that feeds only this node instead."""
    same, late = b.ports(n)
    if late or len(same) != 1:
        b.fail(n, "an integrator is imported with exactly one same-step input (a synapse)")
    (port,) = same
    shape = b.types[port.src].shape
    try:
        vals = {k: fit(arr(a), shape).astype(np.float64) for k, a in
                (("gain", gain), ("v_leak", v_leak), ("tau", 2.0 * b.dt if tau is None else tau),
                 ("tau_syn", b.dt if tau_syn is None else tau_syn))}
    except ValueError:
        b.fail(n, f"parameter shapes do not match its input {list(shape)}")
    for k in ("v_leak", "tau", "tau_syn"):
        if not (vals[k] == vals[k].reshape(-1)[0]).all():
            b.fail(n, f"per-neuron {k} in an integrator is not supported (only r and w_in may vary)")
    first = {k: float(a.reshape(-1)[0]) for k, a in vals.items()}
    gain = vals["gain"]
    tau_s, tau_syn_s = first["tau"] / b.dt, first["tau_syn"] / b.dt
    decay_input = not (model == LIF and (gain == tau_s).all())
    if not decay_input:  # r = tau/dt: the input enters v as it is (snncc's decay_input=False)
        gain = np.ones_like(gain)
    if not (np.isfinite(gain).all() and (gain > 0).all()):
        b.fail(n, "r (and w_in) must be finite and > 0")
    if (gain != 1.0).any():
        op = b.owned_synapse(n, port)
        if op is None:
            b.fail(n, "its input gain (r, w_in, dt) must fold into a synapse (Affine, Linear, Conv) "
                      "feeding only it")
        b.fold_rows(port.src, b.row_values(n, gain, op))
    if model == LIF and not tau_s > 1.0:
        b.fail(n, f"tau must exceed dt={b.dt:g} (tau/dt = {tau_s:g})")
    if tau_syn is not None and not tau_syn_s >= 1.0:
        b.fail(n, f"tau_syn must be at least dt={b.dt:g}")
    params = NeuronParams(model, tau_s if model == LIF else 2.0, float("inf"), first["v_leak"],
                          tau_syn=tau_syn_s if tau_syn is not None else 1.0, decay_input=decay_input)
    b.alias[n] = b.add(n, Integrator(params), [port])


def li(b, n, m):
    _integrator(b, n, LIF, m.r, m.v_leak, tau=m.tau)


def cubali(b, n, m):
    _integrator(b, n, LIF, arr(m.r) * arr(m.w_in), m.v_leak, tau=m.tau_mem, tau_syn=m.tau_syn)


def i(b, n, m):
    r = arr(m.r)
    _integrator(b, n, IF, r * b.dt, np.zeros_like(r))


def lif(b, n, m):
    _population(b, n, LIF, m.tau, m.r, m.v_leak, m.v_threshold, m.v_reset)


def if_(b, n, m):
    r = arr(m.r)
    _population(b, n, IF, None, r * b.dt, np.zeros_like(r), m.v_threshold, m.v_reset)


def cubalif(b, n, m):
    _population(b, n, LIF, m.tau_mem, arr(m.r) * arr(m.w_in), m.v_leak, m.v_threshold, m.v_reset,
                tau_syn=m.tau_syn)


def threshold(b, n, m):
    """s = x > threshold, stateless: snncc's LIF with tau = 1 (h = x + 0, no memory) and the
    threshold's next float64 above (``>=``)."""
    thr = arr(m.threshold)
    _population(b, n, LIF, None, np.ones_like(thr), np.zeros_like(thr), thr, np.zeros_like(thr), memoryless=True)
