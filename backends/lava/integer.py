"""snncc's integer reference for the fixed-point plan: Lava's bit-accurate arithmetic
(:mod:`.fixed` writes it out) simulated with numpy, all samples in parallel, so that Lava's
fixed_pt run can be compared with it spike for spike (and ``snncc quantize`` needs no Lava)."""
from __future__ import annotations

import numpy as np
from scipy import sparse

from snncc.backends.lava.fixed import sample_bias
from snncc.backends.lava.host import dyn_value, host_inputs, realign, replay
from snncc.backends.lava.plan import ConnKind
from snncc.backends.lava.quant import DECAY_UNITY, UV_MAX, conv_apply, lava_weights
from snncc.backends.lava.quantizer import lower_fixed
from snncc.runtime import RunResult, check_input

__all__ = ["simulate", "run_integer"]


def _wrap32(x):
    return ((np.asarray(x, dtype=np.int64) + 2 ** 31) % 2 ** 32) - 2 ** 31


def _wrap24(x):
    """lava.proc.conv.utils.signed_clamp(x, 24): PyConvModelFixed's a_buf wrap."""
    return ((np.asarray(x, dtype=np.int64) + 2 ** 23) % 2 ** 24) - 2 ** 23


def _decay(x, d):
    """sign(x d) * (|x d| >> 12), int64 (Lava's decay: truncation toward zero)."""
    y = x * d
    return np.sign(y) * (np.abs(y) >> 12)


def simulate(plan, steps: int, batch: int, source: np.ndarray | None = None, biases: dict | None = None) -> dict:
    """Run the fixed-point plan with Lava's integer arithmetic (module docstring), all samples in
    parallel from zero state. source: (B, n_src, steps) 0/1; biases: {pop: (mant, exp)} with
    (B, n) arrays. Returns {pop name: (B, n, steps) uint8 spikes} (graded populations: int32
    graded values, the spike counts they send)."""
    fx = plan.fixed
    biases = biases or {}
    pops = list(plan.pops.values())
    W = {c.name: lava_weights(fx.conns[c.name].weight, fx.conns[c.name].sign_mode) for c in plan.conns}
    E = {c.name: fx.conns[c.name].weight_exp for c in plan.conns}
    for c in plan.conns:    # lava Conv: pre-shifted weights, no shift of the sum (FixedParams.conv_kwargs)
        if c.kind is ConnKind.CONV:
            W[c.name], E[c.name] = W[c.name] << E[c.name], 0
    eff_bias = {}
    for p in pops:
        mant, exp = biases.get(p.name, (fx.pops[p.name].bias_mant, fx.pops[p.name].bias_exp))
        mant, exp = np.asarray(mant, np.int64), np.asarray(exp, np.int64)
        eff_bias[p.name] = _wrap32(np.where(exp >= 0, mant << np.maximum(exp, 0), mant >> np.maximum(-exp, 0)))
    u = {p.name: np.zeros((batch, p.size), np.int64) for p in pops}
    v = {p.name: np.zeros((batch, p.size), np.int64) for p in pops}
    a_buff = {c.name: np.zeros((batch, c.out_size), np.int64) for c in plan.conns}
    out = {p.name: np.zeros((batch, p.size, steps), np.int32 if p.graded else np.uint8) for p in pops}
    src_name = plan.source["name"] if plan.source else None
    for t in range(steps):
        a_in = {p.name: np.zeros((batch, p.size), np.int64) for p in pops}
        for c in plan.conns:                       # Dense sends last step's buffer
            a_in[c.dst] = _wrap32(a_in[c.dst] + _wrap32(a_buff[c.name]))
        spikes = {}
        for p in pops:
            if p.graded:   # GradedVec (vth 0): v = a_in; sends v * (|v| > 0) = v, a graded spike
                spikes[p.name] = a_in[p.name]
                out[p.name][:, :, t] = a_in[p.name]
                continue
            q = fx.pops[p.name]
            act = _wrap32(a_in[p.name] << 6)
            cur = _wrap32(_decay(u[p.name], DECAY_UNITY - (q.du + 1)) + act)
            wrapped = np.where(cur > UV_MAX, cur - 2 * UV_MAX, cur)
            wrapped = np.where(wrapped <= -UV_MAX, cur + 2 * UV_MAX, wrapped)
            u[p.name] = wrapped
            vv = _wrap32(_decay(v[p.name], DECAY_UNITY - q.dv) + wrapped + eff_bias[p.name])
            vv = np.clip(vv, -UV_MAX + 1, UV_MAX - 1)
            s = vv > (q.vth << 6)
            vv[s] = 0
            v[p.name] = vv
            spikes[p.name] = s
            out[p.name][:, :, t] = s
        if src_name is not None:
            spikes[src_name] = source[:, :, t] != 0
        for c in plan.conns:                       # then accumulates this step's spikes
            s_in = spikes[c.src].astype(np.int64)
            if c.kind is ConnKind.CONV:            # integer conv (exact in float64), 24-bit wrap
                acc = np.rint(conv_apply(s_in, W[c.name], c.conv)).astype(np.int64)
                a_buff[c.name] = _wrap24(acc)
                continue
            acc = np.asarray((W[c.name] @ s_in.T).T) if sparse.issparse(W[c.name]) else s_in @ W[c.name].T
            e = E[c.name]
            a_buff[c.name] = acc << e if e > 0 else acc >> -e
    return out


def run_integer(graph, x, timesteps: int, plan=None, record: bool = False, input_bound: float = 1.0,
                graded: bool = False):
    """The integer reference run of ``graph`` (or of a given fixed ``plan``): same inputs, same
    per-sample bias quantisation and same readout replay as the Lava run of a fixed-point plan."""
    x = check_input(graph, x, timesteps)
    if plan is None:
        plan = lower_fixed(graph, input_bound=input_bound, graded=graded)
    direct, static = host_inputs(graph, plan, x)
    batch = x.shape[0]
    steps = plan.steps_per_sample(timesteps)
    biases = {}
    for d in plan.dyns:
        qs = [sample_bias(plan, d.target, dyn_value(d, static, b), b) for b in range(batch)]
        biases[d.target] = (np.stack([m for m, _ in qs]), np.stack([e for _, e in qs]))
    source = None
    if plan.source:
        source = np.zeros((batch, plan.source["size"], steps), np.int64)
        source[:, :, :timesteps] = np.asarray(x).reshape(batch, timesteps, -1).transpose(0, 2, 1) != 0
    raw = simulate(plan, steps, batch, source, biases)
    trains = realign(plan, raw, graph, timesteps, batch, steps)
    activity, output = replay(graph, x, trains, timesteps, direct)
    return RunResult(output=output, timesteps=timesteps, batch=batch, activity=activity,
                     trains=trains if record else {})
