"""Build a LavaPlan into Lava processes (lava-nc 0.10): LIF / GradedVec populations,
Dense / Sparse / Conv synapses, source and sink RingBuffers, and the run configuration.

Process arguments come from ``plan.params`` (the float plan itself, or the fixed-point
parameters of :mod:`.fixed`): nothing here branches on the precision.
"""
from __future__ import annotations

import numpy as np

from snncc.backends.lava.plan import Conn, ConnKind, DynVar, LavaPlan, Precision

__all__ = ["graded_float_model", "run_cfg", "build", "zero_buffer", "set_dyn"]

_GRADED_FLOAT_MODEL = None


def graded_float_model():
    """A floating_pt ProcessModel for Lava's GradedVec (Lava 0.10 ships only a fixed_pt one):
    Lava's own AbstractGradedVecModel (v += a_in; s_out = v * (|v| > vth); v = 0), with float
    ports and state. Selected per run with Loihi2SimCfg(exception_proc_model_map=...)."""
    global _GRADED_FLOAT_MODEL
    if _GRADED_FLOAT_MODEL is None:
        from snncc.compat.lava import import_lava
        import_lava()
        from lava.magma.core.decorator import implements, requires, tag
        from lava.magma.core.model.py.ports import PyInPort, PyOutPort
        from lava.magma.core.model.py.type import LavaPyType
        from lava.magma.core.resources import CPU
        from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
        from lava.proc.graded.models import AbstractGradedVecModel
        from lava.proc.graded.process import GradedVec

        @implements(proc=GradedVec, protocol=LoihiProtocol)
        @requires(CPU)
        @tag("floating_pt")
        class PyGradedVecModelFloat(AbstractGradedVecModel):
            a_in = LavaPyType(PyInPort.VEC_DENSE, float)
            s_out = LavaPyType(PyOutPort.VEC_DENSE, float)
            vth: np.ndarray = LavaPyType(np.ndarray, float)
            v: np.ndarray = LavaPyType(np.ndarray, float)
            exp: np.ndarray = LavaPyType(np.ndarray, int)

        _GRADED_FLOAT_MODEL = PyGradedVecModelFloat
    return _GRADED_FLOAT_MODEL


def run_cfg(L, plan: LavaPlan):
    if plan.precision is Precision.FLOAT and any(p.graded for p in plan.pops.values()):
        from lava.proc.graded.process import GradedVec
        return L.Loihi2SimCfg(select_tag=plan.precision,
                              exception_proc_model_map={GradedVec: graded_float_model()})
    return L.Loihi2SimCfg(select_tag=plan.precision)


def _lava_conn_classes():
    from lava.proc.conv.process import Conv as LavaConv
    from lava.proc.sparse.process import Sparse as LavaSparse
    return LavaConv, LavaSparse


def _connect_conn(proc, c: Conn, src_proc, dst_proc):
    """Wire one synapse process. Populations are 1-D C-order (C, H, W) vectors; a lava Conv's
    ports are (X, Y, C) = (H, W, C), bridged with reshape/transpose virtual ports."""
    if c.kind is ConnKind.CONV:
        ci, h, w = c.conv["in_shape"]
        co, ho, wo = c.conv["out_shape"]
        src_proc.s_out.reshape((ci, h, w)).transpose(axes=(1, 2, 0)).connect(proc.s_in)
        proc.a_out.transpose(axes=(2, 0, 1)).reshape((co * ho * wo,)).connect(dst_proc.a_in)
    else:
        src_proc.s_out.connect(proc.s_in)
        proc.a_out.connect(dst_proc.a_in)


def build(L, plan: LavaPlan, x: np.ndarray, batch: int, steps: int, timesteps: int):
    procs = {}
    params = plan.params
    LavaConv, LavaSparse = _lava_conn_classes()
    if plan.source:
        data = np.zeros((plan.source["size"], batch * steps), dtype=params.source_dtype)
        for b in range(batch):
            data[:, b * steps: b * steps + timesteps] = x[b].reshape(timesteps, -1).T
        procs[plan.source["name"]] = L.SourceRingBuffer(data=data)
    for p in plan.pops.values():
        if p.graded:
            from lava.proc.graded.process import GradedVec
            procs[p.name] = GradedVec(shape=(p.size,), vth=0, exp=0)
            procs[p.name].name = p.name
            continue
        kw = params.lif_kwargs(plan, p)
        procs[p.name] = L.LIF(shape=(p.size,), name=p.name, **kw)
    dense = {}
    for c in plan.conns:
        if c.kind is ConnKind.CONV:
            kw = params.conv_kwargs(plan, c)
            ci, h, w = c.conv["in_shape"]
            dense[c.name] = LavaConv(name=c.name, input_shape=(h, w, ci), padding=tuple(c.conv["padding"]),
                                     stride=tuple(c.conv["stride"]), dilation=tuple(c.conv["dilation"]),
                                     groups=int(c.conv["groups"]), num_message_bits=c.bits, **kw)
        elif c.kind is ConnKind.SPARSE:
            dense[c.name] = LavaSparse(name=c.name, num_message_bits=c.bits, **params.dense_kwargs(plan, c))
        else:
            dense[c.name] = L.Dense(name=c.name, num_message_bits=c.bits, **params.dense_kwargs(plan, c))
        _connect_conn(dense[c.name], c, procs[c.src], procs[c.dst])
    sinks = {}
    for p in plan.pops.values():
        if p.record:
            sinks[p.name] = L.SinkRingBuffer(shape=(p.size,), buffer=batch * steps)
            procs[p.name].s_out.connect(sinks[p.name].a_in)
    return procs, dense, sinks


def zero_buffer(c: Conn, proc, dtype):
    if c.kind is ConnKind.CONV:
        co, ho, wo = c.conv["out_shape"]
        proc.a_buf.set(np.zeros((ho, wo, co), dtype))
    else:
        proc.a_buff.set(np.zeros(c.out_size, dtype))


def set_dyn(plan, procs, dense, d, value, b, init=False):
    """Give a per-sample parameter its value (``plan.params.dyn_values``: fixed point gives the
    quantised bias_mant and bias_exp)."""
    proc = dense[d.target] if d.var is DynVar.WEIGHTS else procs[d.target]
    for name, val in plan.params.dyn_values(plan, d, value, b):
        var = getattr(proc, name)
        if init:
            var.init = val
        else:
            var.set(val)

