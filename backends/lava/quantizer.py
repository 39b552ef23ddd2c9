"""Quantise a float LavaPlan to Loihi fixed point: the per-population scale search, the
per-layer report, and :func:`lower_fixed` (the float plan + its integer parameters).
The arithmetic and what is exact: :mod:`.fixed`."""
from __future__ import annotations

import math

import numpy as np

from snncc.backends.lava.fixed import FixedConn, FixedParams, FixedPop
from snncc.backends.lava.lowering import lower_float, requirements
from snncc.backends.lava.matrices import conv_fields, pool_matrix_sparse
from snncc.backends.lava.plan import ConnKind, DynVar, LoweringError, PopRole, Precision
from snncc.backends.lava.quant import (BIAS_EXP_MAX, BIAS_MANT, DECAY_UNITY, DU_MAX, NETX_BIAS_EXP, VTH_MAX,
                                       WEIGHT_EXP, SignMode, a_in_max, conv_apply, current_du, lava_weights,
                                       map_values, netx_bias, quant_weights, row_pos_neg, sign_mode, split_bias,
                                       vals)
from snncc.ir.ops import Conv, Dense
from snncc.runtime import validate

__all__ = ["quantize", "quantize_plan", "attach_fixed", "lower_fixed", "effective"]

_K_SEARCH = 48               # how far below the threshold-limited k the search goes


def effective(c: FixedConn):
    """Per-weight value in a_in units (ignores the floor of the summed input when e < 0)."""
    return map_values(lava_weights(c.weight, c.sign_mode), lambda d: d * 2.0 ** c.weight_exp)



def _static_bounds(graph, plan, input_bound: float) -> dict:
    """|value| bound (per element) of each static (direct-input) node for |x| <= input_bound."""
    types = graph.infer()
    out = {}
    for n in plan.static:
        op = graph.op(n)
        ins = [out[p.src] for p in graph.inputs(n)]
        if op.is_input:  # |x| <= input_bound before the input's normalisation, if any
            out[n] = np.full(types[n].size, op.value_bound(float(input_bound)))
        elif op.passes_through:
            out[n] = ins[0]
        elif op.folds_into_synapse:   # an avg/sum (or max, bounded by the sum) pool
            (p,) = graph.inputs(n)
            pm = pool_matrix_sparse(types[p.src].shape, op.kernel, op.stride, op.padding, op.window_value)
            out[n] = pm @ ins[0]   # (max <= sum of the window's bounds)
        elif isinstance(op, (Dense, Conv)):
            (p,) = graph.inputs(n)
            w = np.abs(np.asarray(op.weight, dtype=np.float64))
            b = 0.0 if op.bias is None else np.repeat(np.abs(np.asarray(op.bias, dtype=np.float64)),
                                                      types[n].size // np.size(op.bias))
            if isinstance(op, Dense):
                out[n] = w @ ins[0] + b
            else:   # |W| @ bound as a conv (no unrolled matrix)
                cv = {"in_shape": types[p.src].shape, **conv_fields(op)}
                out[n] = conv_apply(ins[0][None], w, cv)[0] + b
        else:  # pragma: no cover - the float lowering only marks these as static
            raise LoweringError(f"fixed point: cannot bound static node {n!r}")
    return out


def _fail(what: str, value, integer, rng: str, k) -> None:
    raise LoweringError(f"fixed point: {what} = {value:.6g} is {integer} at scale 2^{k} "
                        f"(v unit 2^-{k + 6}), beyond Lava's range {rng}")


def _theta(p) -> float:
    return float(np.nextafter(p.vth, np.inf))   # the float plan stores nextafter(theta, -inf)


class _PopQuant:
    """Everything needed to try a scale k for one neuron population."""

    def __init__(self, plan, pop, conns, bias_bound, netx: bool = False):
        self.pop, self.conns, self.bias_bound, self.netx = pop, conns, bias_bound, netx
        self.theta = _theta(pop)
        self.du = current_du(pop.du)
        if self.du is None:
            raise LoweringError(f"node {pop.node!r}: fixed point: synaptic time constant tau_syn = {1 / pop.du:.6g} "
                                f"steps: Lava's 12-bit du (u decays by (du + 1)/4096 per step) cannot decay slower "
                                f"than 1/4096 (tau_syn <= 8192)")
        self.modes = {c.name: sign_mode(c.weight) for c in conns}
        self.convs = {c.name: c.conv if c.kind is ConnKind.CONV else None for c in conns}
        # largest value a source sends: 1 for spikes, the largest count for a graded source
        self.src_max = {c.name: (plan.pops[c.src].max_value if c.src in plan.pops and plan.pops[c.src].graded
                                 else 1) for c in conns}

    def attempt(self, k: int):
        """(FixedPop, {conn: FixedConn}, violation or None) at scale k."""
        p = self.pop
        viol = None

        def bad(*args):
            nonlocal viol
            if viol is None:
                viol = args
        theta_v = self.theta * 2.0 ** (k + 6)
        vth = int(np.rint((theta_v - 1) / 64))
        if vth > VTH_MAX or vth < 0:
            bad(f"threshold of population {p.name!r}", self.theta, vth, f"vth 0..{VTH_MAX} (17 bits)")
        qc, pos, neg = {}, np.zeros(p.size), np.zeros(p.size)
        for c in self.conns:
            conv = self.convs[c.name]
            w, e, clipped, wanted = quant_weights(c.weight * 2.0 ** k, self.modes[c.name],
                                                   0 if conv is not None or self.netx else WEIGHT_EXP[0])
            if self.netx and wanted > 0:
                bad(f"netx: largest |weight| of {c.kind.lava_name} {c.name!r}",
                    float(np.abs(vals(c.weight)).max()), f"2^{wanted}-scaled", "integer weights (weight_exp 0)")
            if wanted > WEIGHT_EXP[1]:
                bad(f"largest |weight| of {c.kind.lava_name} {c.name!r}", float(np.abs(vals(c.weight)).max()),
                    f"2^{wanted}-scaled", f"weight_exp {WEIGHT_EXP[0]}..{WEIGHT_EXP[1]}")
            qc[c.name] = q = FixedConn(c.name, w, e, self.modes[c.name], clipped, c.kind)
            ps, ns = row_pos_neg(effective(q), conv)
            pos += ps * self.src_max[c.name]
            neg += ns * self.src_max[c.name]
        worst = float(max(pos.max(initial=0), neg.max(initial=0)))
        if worst > a_in_max(self.du):
            bad(f"worst-case input current of population {p.name!r}", worst * 2.0 ** -k, int(worst),
                f"|a_in| <= {a_in_max(self.du)} (u, at most 64 |a_in| 4096 / (du + 1) with du = {self.du}, "
                f"is 24 bits)")
        bv = np.rint(p.bias * 2.0 ** (k + 6))
        mant, exp, fits = netx_bias(p.bias * 2.0 ** k) if self.netx else split_bias(bv)
        exp_max = NETX_BIAS_EXP if self.netx else BIAS_EXP_MAX
        if not fits.all():
            i = int(np.argmin(fits))
            bad(f"bias of population {p.name!r} (neuron {i})", float(p.bias[i]), int(bv[i]),
                f"bias_mant {BIAS_MANT[0]}..{BIAS_MANT[1]} << bias_exp {'6 (netx)' if self.netx else '0..7'}")
        if self.bias_bound is not None:
            bb = float(np.max(self.bias_bound)) * 2.0 ** (k + 6)
            if np.rint(bb / 2 ** exp_max) > BIAS_MANT[1]:
                bad(f"worst-case per-sample input bias of population {p.name!r}",
                    float(np.max(self.bias_bound)), int(bb),
                    f"bias_mant {BIAS_MANT[0]}..{BIAS_MANT[1]} << bias_exp 0..{BIAS_EXP_MAX}")
        dv = 0 if p.dv == 0 else int(min(max(np.rint(p.dv * DECAY_UNITY), 0), DU_MAX))
        fp = FixedPop(p.name, p.role, k, self.du, dv, max(vth, 0), mant, exp)
        return fp, qc, viol


def quantize_plan(graph, plan, input_bound: float = 1.0, scale_exp=None, netx: bool = False) -> FixedParams:
    """Quantise a float LavaPlan (pure: plan and graph are not modified). ``netx``: netx's
    conventions (integer weights with weight_exp 0, bias_exp 6; module docstring)."""
    if any(d.var is DynVar.WEIGHTS for d in plan.dyns):
        d = next(d for d in plan.dyns if d.var is DynVar.WEIGHTS)
        raise LoweringError(f"fixed point: direct-input current into a deeper population ({d.target!r}) "
                            "needs a per-sample Dense weight exponent; not supported")
    bounds = _static_bounds(graph, plan, input_bound) if plan.dyns else {}
    pops, conns, report = {}, {}, []
    for p in plan.pops.values():
        ins = [c for c in plan.conns if c.dst == p.name]
        if p.role is not PopRole.NEURON:
            for c in ins:
                v = vals(c.weight)
                if c.kind is ConnKind.CONV or not np.all((v == 0) | (v == 1)):  # pragma: no cover
                    raise LoweringError(f"fixed point: helper Dense {c.name!r} has non-0/1 weights")
                conns[c.name] = FixedConn(c.name, map_values(c.weight, lambda d: np.asarray(d).astype(np.int64)), 0,
                                          SignMode.EXCITATORY, 0, c.kind)
            bias = np.rint(p.bias).astype(np.int64)
            pops[p.name] = FixedPop(p.name, p.role, None, DU_MAX, DU_MAX, 0, bias, np.zeros(p.size, np.int64))
            continue
        bias_bound = None
        for d in plan.dyns:
            if d.target == p.name:
                bias_bound = np.abs(d.const) + sum(abs(s) * bounds[n] for n, s in d.terms)
        pq = _PopQuant(plan, p, ins, bias_bound, netx)
        forced = None
        if scale_exp is not None:
            forced = scale_exp.get(p.name) if isinstance(scale_exp, dict) else int(scale_exp)
        if forced is not None:
            fp, qc, viol = pq.attempt(int(forced))
            if viol:
                _fail(*viol[:3], viol[3], int(forced))
        else:
            k_hi = int(math.floor(math.log2((VTH_MAX * 64 + 1) / pq.theta))) - 6
            for k in range(k_hi, k_hi - _K_SEARCH, -1):
                fp, qc, viol = pq.attempt(k)
                if not viol:
                    break
            else:
                _fail(*viol[:3], viol[3], k)
        pops[p.name] = fp
        conns.update(qc)
        report.append(_pop_row(p, fp, bias_bound is not None))
        for c in ins:
            report.append(_conn_row(c, qc[c.name], p, fp))
    return FixedParams(pops, conns, report, float(input_bound), netx)


def _pop_row(p, fp: FixedPop, per_sample: bool) -> dict:
    unit = 2.0 ** -(fp.k + 6)
    theta = _theta(p)
    eff_theta = (64 * fp.vth + 1) * unit
    eff_bias = (fp.bias_mant << fp.bias_exp) * unit
    return {"layer": p.name, "kind": "population", "graph_node": p.node, "scale_exp": fp.k,
            "du": fp.du, "dv": fp.dv, "decay": p.dv, "decay_error": abs(fp.dv / DECAY_UNITY - p.dv),
            "current_decay_error": abs((fp.du + 1) / DECAY_UNITY - p.du),   # CUBA: 1/tau_syn vs (du + 1)/4096
            "vth": fp.vth, "threshold": theta, "threshold_error": abs(eff_theta - theta),
            "bias_max_abs_error": float(np.abs(eff_bias - p.bias).max(initial=0.0)),
            "bias_exp_max": int(fp.bias_exp.max(initial=0)),
            # direct-input current W x + b: float64 on the host, rounded per sample to
            # bias_mant << bias_exp (sample_bias); bias_max_abs_error covers only the constant part
            "per_sample_bias": per_sample}


def _conn_row(c, q: FixedConn, p, fp: FixedPop) -> dict:
    to_graph = 2.0 ** -fp.k / p.scale          # a_in units -> the graph's weight units
    w = vals(c.weight) / p.scale                # (CSR: stored values only, same structure)
    err = np.abs(vals(effective(q)) * to_graph - w)
    wmax = float(np.abs(w).max(initial=0.0))
    mx = float(err.max(initial=0.0))
    return {"layer": c.name, "kind": "dense", "role": c.role, "graph_nodes": list(c.nodes), "dst": p.name,
            "weight_exp": q.weight_exp, "sign_mode": q.sign_mode,
            "step": 2.0 ** (q.weight_exp + (q.sign_mode is SignMode.MIXED)) * to_graph,
            "max_abs_weight": wmax, "max_abs_error": mx, "rel_error": mx / wmax if wmax else 0.0,
            "mean_abs_error": float(err.mean()) if err.size else 0.0, "clipped": q.clipped,
            "process": q.kind}


def quantize(graph, input_bound: float = 1.0, scale_exp=None, graded: bool = False) -> FixedParams:
    """Pure function: graph -> quantised fixed-point parameters (with a per-layer report)."""
    validate(graph, requirements(graded))
    return quantize_plan(graph, lower_float(graph, graded=graded), input_bound, scale_exp)


def attach_fixed(graph, plan, input_bound: float = 1.0, scale_exp=None, netx: bool = False):
    """Give a float plan its fixed-point parameters and precision fixed_pt (returns it)."""
    for p in plan.pops.values():
        if p.role is PopRole.NEURON and p.dv == 1.0:
            raise LoweringError(f"node {p.node!r}: a memoryless LIF (tau = 1, e.g. NIR's Threshold) needs dv = 4096 "
                                f"in fixed point; Lava's 12-bit dv stops at 4095, which keeps 1/4096 of the last "
                                f"potential: lowered to Lava float only")
    plan.fixed = quantize_plan(graph, plan, input_bound, scale_exp, netx)
    plan.precision = Precision.FIXED
    return plan


def lower_fixed(graph, input_bound: float = 1.0, scale_exp=None, graded: bool = False, netx: bool = False):
    """The validated graph's float LavaPlan with its ``fixed`` parameters attached and precision
    'fixed_pt' (``graded``: spike counts as graded messages, as in lowering.lower_float; ``netx``:
    netx's integer conventions, see :mod:`.fixed`)."""
    validate(graph, requirements(graded))
    return attach_fixed(graph, lower_float(graph, graded=graded), input_bound, scale_exp, netx)
