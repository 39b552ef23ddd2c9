"""The Backend seam: every backend handles or refuses by name every op; adding an op is one
registered dataclass (shown with a toy op defined here); the registry, options and pipeline."""
from dataclasses import dataclass

import numpy as np
import pytest

from graphs import LIF, mlp
from snncc.backends import torch_ref
from snncc.backends.base import Backend, LoweringError, UnsupportedOp
from snncc.ir import ops, serialize
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Dense, Input, Neuron, Op, Readout, register_op, unregister_op
from snncc.ir.types import TensorType
from snncc.passes.validate import check_fully_spiking
from snncc.runtime import BACKENDS, InputError, get_backend, lower, make_options
from snncc.sims import numba_sim


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_backend_handles_or_refuses_every_op_by_name(name):
    be = get_backend(name)
    assert isinstance(be, Backend) and be.name == name
    assert BACKENDS[name][1] == be.target_file
    assert set(be.rules) <= set(ops.OP_TYPES), "a rule for a class that is not a registered op"
    for op_type in ops.OP_TYPES:
        assert be.handles(op_type) or op_type.__name__ in be.refusal(op_type), (name, op_type)
    # every backend has a rule for every op (Lava refuses a binary-spike Add inside its rule), except what it
    # refuses on purpose with a reason: Lava's analog Integrator
    assert set(be.rules) | set(be.refuses) == set(ops.OP_TYPES)
    assert all(len(be.refuses[t]) > 20 for t in be.refuses)


@register_op
@dataclass(frozen=True, eq=False)
class _Probe(Op):
    """Registered at import only to be removed again: register_op must refuse duplicates."""


unregister_op(_Probe)


@dataclass(frozen=True, eq=False)
class Scale(Op):
    """A toy op: multiplies its input by ``factor`` (analog out). The whole recipe for a new
    op is this class + ``register_op``; its answers to the passes' questions are the Op
    defaults (not a synapse, not a population, may be static)."""

    factor: float = 2.0
    arity = (1, 1)

    def infer(self, name, types):
        (t,) = types
        return TensorType(t.kind if self.factor == 1.0 else ops.Kind.ANALOG, t.shape)


@pytest.fixture
def scale_op():
    register_op(Scale)
    yield Scale
    unregister_op(Scale)
    assert Scale not in ops.OP_TYPES


def _scaled_mlp(rng, factor):
    g = SpikeGraph("scaled")
    g.add("x", Input((6,)))
    g.add("s", Scale(factor), ["x"])
    g.add("fc", Dense(rng.normal(size=(5, 6))), ["s"])
    g.add("n", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["n"])
    return g


def test_a_new_op_touches_one_place(scale_op, rng, tmp_path):
    with pytest.raises(Exception, match="already registered"):
        register_op(Scale)
    g = _scaled_mlp(rng, 3.0)
    # IR, serialization and validation need no change
    assert g.type_of("s").kind is ops.Kind.ANALOG
    serialize.save(g, tmp_path / "s.snn.onnx")
    g2 = serialize.load(tmp_path / "s.snn.onnx")
    assert isinstance(g2.op("s"), Scale) and g2.op("s").factor == 3.0
    report = check_fully_spiking(g)
    assert not report.fully_spiking and report.violations[0].node == "fc"   # analog Scale output, named
    # every backend refuses it by name (class and node) until it gets a rule
    x = rng.random((3, 6))
    for name in sorted(BACKENDS):
        with pytest.raises(UnsupportedOp, match=r"Scale.*'s'"):
            lower(g, name)
    with pytest.raises(NotImplementedError, match=r"Scale.*'s'"):
        torch_ref.run(g, x, 4)
    with pytest.raises(NotImplementedError, match=r"Scale.*'s'"):
        numba_sim.run(g, x, 4)


def test_a_backend_rule_is_one_table_entry(scale_op, rng, monkeypatch):
    """Give torch and numba a rule each (one entry in their RULES tables): the scaled graph
    then equals the unscaled network on a scaled input (an independent oracle)."""
    monkeypatch.setitem(torch_ref.RULES, Scale, lambda op, xs, _: xs[0] * op.factor)

    def numba_eval(node, ins, out, state, threads):
        out[...] = ins[0] * node.data["f"]
        return float(out.sum())
    monkeypatch.setitem(numba_sim.RULES, Scale, (lambda op, tin, tout: {"f": op.factor}, numba_eval))
    w_rng = np.random.default_rng(7)
    g = _scaled_mlp(w_rng, 0.5)
    plain = SpikeGraph("plain")
    plain.add("x", Input((6,)))
    plain.add("fc", Dense(g.op("fc").weight), ["x"])
    plain.add("n", Neuron(LIF), ["fc"])
    plain.add("out", Readout("count"), ["n"])
    x = rng.random((4, 6)) * 4
    ref = torch_ref.run(plain, x * 0.5, 6, record=True)
    for name in ("torch", "numba"):
        prog = lower(g, name)
        got = get_backend(name).run(prog, x, 6, record=True)
        assert np.array_equal(got.trains["n"], ref.trains["n"]), name
        assert ref.trains["n"].any() and not ref.trains["n"].all()
    with pytest.raises(UnsupportedOp, match=r"lava backend has no rule for op Scale \(node 's'\)"):
        lower(g, "lava")


def test_registry_and_options(rng):
    with pytest.raises(InputError, match="unknown backend 'nope'"):
        get_backend("nope")
    lava = get_backend("lava")
    opts = make_options("lava", {"fixed_point": True, "graded_spikes": False})
    assert opts == lava.Options(fixed_point=True) and not opts.graded_spikes
    with pytest.raises(InputError, match="--graded-spikes applies to --backend lava"):
        make_options("numba", {"graded_spikes": True})
    with pytest.raises(InputError, match="--netx applies to --target lava"):
        make_options("torch", {"netx": True}, word="--target")
    # the pipeline validates before lowering: a hybrid graph is refused for deployment only
    from graphs import residual
    sew = residual(rng, "sew")
    assert lower(sew, "numba").plan is not None
    with pytest.raises(LoweringError, match="graph is not fully spiking: .*spike ADD"):
        lower(sew, "numba", deploy=True)
    prog = lower(mlp(rng), "torch")
    assert prog.backend == "torch" and prog.plan is None


def test_numba_import_does_no_work():
    """Importing the simulator starts no threads and touches no files (it happens on first use)."""
    import subprocess
    import sys
    code = ("import threading, builtins\n"
            "opened, real = [], builtins.open\n"
            "def spy(f, *a, **k):\n    opened.append(str(f)); return real(f, *a, **k)\n"
            "builtins.open = spy\n"
            "before = threading.active_count()\n"
            "from snncc.sims import numba_kernels, numba_sim\n"
            "builtins.open = real\n"
            "assert threading.active_count() == before, threading.enumerate()\n"
            "from snncc.sims import numba_threads\n"
            "assert not numba_threads.started() and not numba_kernels._CACHE_CHECKED\n"
            "assert not [f for f in opened if 'numba_sim.neuron' in f], opened\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
