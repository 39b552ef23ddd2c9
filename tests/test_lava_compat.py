"""Tests for the lava-nc 0.10.0 / Python 3.11 import shim and Lava's float LIF semantics.

Measured Lava facts (lava-nc 0.10.0, Loihi2SimCfg(select_tag="floating_pt")):
  * Synapse delay: a spike injected by a source RingBuffer at step 0 into
    Dense -> LIF (suprathreshold weight, du = dv = 1) shows up as a spike of
    that first LIF at step 1, and of a second Dense -> LIF layer at step 2.
    I.e. each Dense adds exactly ONE step of delay (PyDenseModelFloat sends the
    a_buff accumulated last step, then accumulates this step's input).
  * LIF float update per step, in this order:
        u = u * (1 - du) + a_in
        v = v * (1 - dv) + u + bias_mant      (bias_exp ignored in float model)
        spike = v > vth  (strict), then v[spike] = 0 (u is NOT reset)
    Bias is added every step, including the first; no refractory period.
  * Step numbering: RingBuffer source sends data[:, (t-1) % T] at Lava
    time_step t = 1, 2, ...; the sink writes at the same index, so "step k"
    below means column k of those buffers.
"""
import numpy as np
import pytest

from snncc.compat import lava as compat


def test_install_makes_lava_importable():
    compat.install()
    compat.install()  # idempotent
    assert sum(isinstance(f, compat._Finder) for f in __import__("sys").meta_path) <= 1
    from lava.proc.lif.process import LIF  # noqa: F401
    from lava.magma.compiler.var_model import CoreEncoder
    # default_factory => distinct instances, not one shared mutable default
    assert CoreEncoder().x is not CoreEncoder().x


def test_fresh_interpreter_import():
    # In-process imports may be satisfied by sys.modules; prove it from scratch.
    import subprocess
    import sys
    code = ("from snncc.compat.lava import install; install(); "
            "from lava.proc.lif.process import LIF; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=__import__("pathlib").Path(__file__).parents[1])
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_rewrite_source():
    src = (
        "from __future__ import annotations\n"
        "from dataclasses import dataclass, InitVar\n"
        "@dataclass\nclass ByteEncoder:\n    base: int = 0\n"
        "@dataclass\nclass C:\n    x: ByteEncoder = ByteEncoder()\n"
        "    y:ByteEncoder=ByteEncoder()\n    z: int = 3\n"
    )
    out = compat.rewrite_source(src)
    assert "ByteEncoder()" not in out
    assert out.count("= field(default_factory=ByteEncoder)") == 2
    assert "from dataclasses import dataclass, InitVar, field\n" in out
    assert out.count("\n") == src.count("\n")  # line numbers preserved
    ns = {}
    exec(compile(out, "<rewritten>", "exec"), ns)
    assert ns["C"]().x is not ns["C"]().x and ns["C"]().z == 3
    # Nothing to fix -> unchanged (the finder then steps aside).
    assert compat.rewrite_source("x = 1\n") == "x = 1\n"
    # No dataclasses import to extend -> one is added after __future__ imports.
    src2 = "from __future__ import annotations\nclass C:\n    a: ByteEncoder = ByteEncoder()\n"
    out2 = compat.rewrite_source(src2)
    assert out2.splitlines()[1] == "from dataclasses import field"


def _closed_form_v(bias, dv, vth, n):
    """v after n steps for a float LIF with no input and u0 = v0 = 0.

    u stays 0, so between resets v_m = bias * (1 - (1-dv)^m) / dv, m steps after
    the last reset; it spikes (and resets) at the first m with v_m > vth, so
    the trace is periodic with that period P and v_n = v_{n mod P}.
    """
    f = lambda m: bias * (1 - (1 - dv) ** m) / dv  # noqa: E731
    period = next((m for m in range(1, n + 1) if f(m) > vth), None)
    m = n if period is None else n % period
    spikes = [period is not None and k % period == 0 for k in range(1, n + 1)]
    return f(m), np.array(spikes)


def test_lif_bias_only_matches_closed_form():
    L = compat.import_lava()
    # Binary fractions keep every value exact; with bias 0.5 the voltage hits
    # exactly vth=0.75 at step 2 and must NOT spike (Lava compares v > vth).
    bias, dv, vth, n = np.array([0.5, 0.25, 1.0, 0.625, 0.0]), 0.5, 0.75, 10
    lif = L.LIF(shape=(5,), du=0.3, dv=dv, vth=vth, bias_mant=bias)
    sink = L.SinkRingBuffer(shape=(5,), buffer=n)
    lif.s_out.connect(sink.a_in)
    try:
        lif.run(condition=L.RunSteps(n), run_cfg=L.Loihi2SimCfg(select_tag="floating_pt"))
        v, u, spk = lif.v.get(), lif.u.get(), sink.data.get()
    finally:
        lif.stop()
    expect = [_closed_form_v(b, dv, vth, n) for b in bias]
    np.testing.assert_allclose(v, [e[0] for e in expect], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(spk > 0, np.stack([e[1] for e in expect]))
    np.testing.assert_array_equal(u, 0.0)
    assert list(np.flatnonzero(spk[0]) + 1) == [3, 6, 9]  # period 3, not 2


def test_dense_synapse_delay_is_one_step():
    L = compat.import_lava()
    T = 6
    data = np.zeros((1, T))
    data[0, 0] = 1.0  # one spike at step 0
    src = L.SourceRingBuffer(data=data)
    d1, d2 = L.Dense(weights=np.array([[2.0]])), L.Dense(weights=np.array([[2.0]]))
    l1 = L.LIF(shape=(1,), du=1.0, dv=1.0, vth=1.0)
    l2 = L.LIF(shape=(1,), du=1.0, dv=1.0, vth=1.0)
    s1, s2 = L.SinkRingBuffer(shape=(1,), buffer=T), L.SinkRingBuffer(shape=(1,), buffer=T)
    src.s_out.connect(d1.s_in)
    d1.a_out.connect(l1.a_in)
    l1.s_out.connect(d2.s_in)
    d2.a_out.connect(l2.a_in)
    l1.s_out.connect(s1.a_in)
    l2.s_out.connect(s2.a_in)
    try:
        src.run(condition=L.RunSteps(T), run_cfg=L.Loihi2SimCfg(select_tag="floating_pt"))
        out1, out2 = s1.data.get()[0], s2.data.get()[0]
    finally:
        src.stop()
    assert compat.LAVA_DENSE_DELAY == 1
    assert list(np.flatnonzero(out1)) == [compat.LAVA_DENSE_DELAY]
    assert list(np.flatnonzero(out2)) == [2 * compat.LAVA_DENSE_DELAY]


def test_lava_unavailable_message(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name.startswith("lava"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(compat.LavaUnavailable, match="lava-nc") as ei:
        compat.import_lava()
    assert "\n" not in str(ei.value)


def test_install_is_noop_before_311(monkeypatch):
    monkeypatch.setattr(compat.sys, "version_info", (3, 10, 12))
    monkeypatch.setattr(compat.sys, "meta_path", [])
    compat.install()
    assert compat.sys.meta_path == []
