"""lava-dl netx HDF5 export (written with h5py; lava-dl itself is not installed): the file's structure
and values round-trip to the netx-mode fixed-point plan; two independent readers re-run the network
the file describes -- a numpy one (CUBA dynamics as netx builds them: Lava LIF bit-accurate, one-step
Dense/Conv delay, LIFReset per layer) and one that builds it from the file with Lava processes the
way netx's loader does -- and match snncc's integer reference spike for spike; refusals name the node."""
import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import graphs
from snncc.backends import torch_ref as torch_backend
from snncc.ir import serialize
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Conv, Dense, Flatten, Input, Neuron, Pool, Readout
from snncc.neuron import NeuronParams

lb = pytest.importorskip("snncc.backends.lava")
lf = pytest.importorskip("snncc.backends.lava.fixed_point")
nx = pytest.importorskip("snncc.backends.lava.netx")

LIF = NeuronParams("lif", tau=2.0, v_th=0.5)
IF = NeuronParams("if", v_th=1.0)


def spike_mlp(rng):
    g = SpikeGraph("spike-mlp", {"timesteps": 8})
    g.add("x", Input((1, 8, 8), "spike"))
    g.add("flat", Flatten(), ["x"])
    g.add("fc0", Dense(rng.normal(0.05, 0.35, (24, 64)), rng.normal(0, 0.1, 24)), ["flat"])
    g.add("h0", Neuron(IF), ["fc0"])
    g.add("fc1", Dense(rng.normal(0.1, 0.5, (10, 24)), rng.normal(0.05, 0.1, 10)), ["h0"])
    g.add("h1", Neuron(LIF), ["fc1"])
    g.add("out", Readout("count"), ["h1"])
    return g


def spike_cnn(rng):
    """conv -> LIF -> strided conv -> LIF (v_reset -0.25) -> avg pool (folded) -> flatten -> dense -> LIF."""
    g = SpikeGraph("spike-cnn", {"timesteps": 6})
    g.add("x", Input((1, 8, 8), "spike"))
    g.add("c1", Conv(rng.normal(0.1, 0.9, (3, 1, 3, 3)), rng.normal(0.05, 0.05, 3), (1, 1), (1, 1)), ["x"])
    g.add("s1", Neuron(LIF), ["c1"])
    g.add("c2", Conv(rng.normal(0.1, 0.6, (4, 3, 3, 3)), rng.normal(0, 0.1, 4), (2, 2), (1, 1)), ["s1"])
    g.add("s2", Neuron(NeuronParams("lif", tau=2.0, v_th=0.5, v_reset=-0.25)), ["c2"])
    g.add("ap", Pool("avg", (2, 2), (2, 2)), ["s2"])
    g.add("fl", Flatten(), ["ap"])
    g.add("fc", Dense(rng.normal(0.1, 1.2, (5, 16)), rng.normal(0.1, 0.1, 5)), ["fl"])
    g.add("s3", Neuron(LIF), ["fc"])
    g.add("out", Readout("count"), ["s3"])
    return g


# -- an independent numpy reader of the file ---------------------------------------------------
def _layers(path):
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        out = []
        for i in range(len(f["layer"])):
            g = f["layer"][str(i)]
            lay = {"type": g["type"][()].decode("ascii")}
            for k in g:
                if k not in ("type", "neuron"):
                    lay[k] = g[k][()]
            if "neuron" in g:
                lay["neuron"] = {k: (v[()].decode() if v.dtype.kind == "S" else v[()]) for k, v in g["neuron"].items()}
            lay["attrs"] = dict(g.attrs)
            out.append(lay)
    return attrs, out


def _decay(x, d):
    y = x * d
    return np.sign(y) * (np.abs(y) >> 12)


def _conv(s, w, stride, pad, in_shape):
    """Integer cross-correlation of one (C, H, W) input with a (Co, Ci, kh, kw) kernel."""
    c, h, wd = in_shape
    x = np.pad(s.reshape(c, h, wd), ((0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    co, ci, kh, kw = w.shape
    ho = (h + 2 * pad[0] - kh) // stride[0] + 1
    wo = (wd + 2 * pad[1] - kw) // stride[1] + 1
    out = np.zeros((co, ho, wo), np.int64)
    for i in range(ho):
        for j in range(wo):
            win = x[:, i * stride[0]: i * stride[0] + kh, j * stride[1]: j * stride[1] + kw]
            out[:, i, j] = np.tensordot(w, win, axes=([1, 2, 3], [0, 1, 2]))
    return out.ravel()


def _host_current(host, xb):
    """What the file says the host computes for one sample: normalise (hostMean/hostStd), then
    hostWeight x + hostBias, or x itself for the identity kind."""
    if "hostMean" in host:
        shape = (-1,) + (1,) * (xb.ndim - 1)
        xb = (xb - host["hostMean"].reshape(shape)) / host["hostStd"].reshape(shape)
    if host["attrs"]["host_kind"] == "identity":
        assert "hostWeight" not in host
        return xb.ravel()
    return host["hostWeight"] @ xb.ravel() + host["hostBias"]


def bsd_like(rng, normalise=False):
    """BSD's MLP shape: the input drives an encoder population directly (Flatten -> LIF)."""
    mean, std = (np.array([0.3]), np.array([0.4])) if normalise else (None, None)
    g = SpikeGraph("bsd-like", {"timesteps": 6})
    g.add("x", Input((1, 8, 8), mean=mean, std=std))
    g.add("flat", Flatten(), ["x"])
    g.add("enc", Neuron(LIF), ["flat"])
    g.add("fc0", Dense(rng.normal(0, 2 / 8, (32, 64)), rng.normal(0, 0.1, 32)), ["enc"])
    g.add("h", Neuron(LIF), ["fc0"])
    g.add("fc1", Dense(rng.normal(0, 2.5 / np.sqrt(32), (10, 32))), ["h"])
    g.add("o", Neuron(LIF), ["fc1"])
    g.add("out", Readout("count"), ["o"])
    return g


def run_netx_numpy(path, x, T):
    """Re-run the file's network on a stream of samples (one every T + D steps) as netx builds it."""
    attrs, layers = _layers(path)
    R = T + int(attrs["snncc_reset_interval_extra"])
    off = int(attrs["snncc_reset_offset"])
    neur, shape, host = [], None, None
    for lay in layers:
        if lay["type"] == "input":
            shape = tuple(lay["shape"])
            if "neuron" in lay:     # direct input: a neuron layer driven by a per-sample bias
                host = lay
                neur.append({"kind": "input", "n": lay["neuron"], "size": int(np.prod(shape))})
        elif lay["type"] in ("dense", "conv"):     # ('flatten' changes nothing for C-order vectors)
            size = int(np.prod(lay["shape"]))
            bias = np.zeros(size, np.int64) if "bias" not in lay else lay["bias"].astype(np.int64)
            neur.append({"kind": lay["type"], "n": lay["neuron"], "size": size,
                         "bias": np.repeat(bias, size // bias.size), "w": lay["weight"].astype(np.int64),
                         "in_shape": shape, "stride": lay.get("stride"), "padding": lay.get("padding")})
            shape = tuple(lay["shape"])
    B = x.shape[0]
    u = [np.zeros(lay["size"], np.int64) for lay in neur]
    v = [np.zeros(lay["size"], np.int64) for lay in neur]
    buf = [np.zeros(lay["size"], np.int64) for lay in neur]     # synapse output, delivered next step
    trains = [np.zeros((T, B, lay["size"]), np.uint8) for lay in neur]
    for b in range(B):
        if host is not None:   # the host-side first synapse -> per-sample bias_mant of the input layer
            a = host["attrs"]
            cur = _host_current(host, x[b])
            neur[0]["bias"] = np.rint(cur * a["host_scale"] * 2.0 ** a["host_scale_exp"]).astype(np.int64)
        for col in range(R):
            ts = b * R + col + 1                       # Lava counts time steps from 1
            spikes = []
            for i, lay in enumerate(neur):
                if ts % R == (off + 1 + i) % R:          # LIFReset: u = v = 0 before this step
                    u[i][:] = 0
                    v[i][:] = 0
                nrn = lay["n"]
                uu = _decay(u[i], 4096 - int(nrn["iDecay"])) + (buf[i] << 6)
                uu = np.where(uu > 2 ** 23, uu - 2 ** 24, uu)
                u[i] = np.where(uu <= -2 ** 23, uu + 2 ** 24, uu)
                vv = _decay(v[i], 4096 - int(nrn["vDecay"])) + u[i] + (lay["bias"] << 6)
                vv = np.clip(vv, -(2 ** 23 - 1), 2 ** 23 - 1)
                s = vv > (int(nrn["vThMant"]) << 6)
                vv[s] = 0
                v[i] = vv
                spikes.append(s.astype(np.int64))
                if off + i <= col < off + i + T:
                    trains[i][col - off - i, b] = s
            for i, lay in enumerate(neur):
                if lay["kind"] == "input":
                    continue
                if i == 0:                              # spike input: columns 0..T-1 of the block
                    pre = (x[b, col].ravel() != 0).astype(np.int64) if col < T else np.zeros(x[b, 0].size, np.int64)
                else:
                    pre = spikes[i - 1]
                buf[i] = lay["w"] @ pre if lay["kind"] == "dense" else \
                    _conv(pre, lay["w"], lay["stride"], lay["padding"], lay["in_shape"])
    return trains


def _reference(g, x, T, ex):
    ref = lf.run_integer(g, x, T, plan=ex.plan, record=True)
    pops = [p for p in g.populations()]
    return ref, pops


@pytest.mark.parametrize("case", ["mlp-direct", "mlp-spike", "cnn-spike", "encoder", "encoder-normalised",
                                  "mlp-direct-normalised"])
def test_numpy_reader_matches_integer_reference(case, tmp_path):
    rng = np.random.default_rng(4)
    if case.startswith("encoder"):
        g, T = bsd_like(rng, normalise=case.endswith("normalised")), 6
        x = rng.random((3, 1, 8, 8))
    elif case.startswith("mlp-direct"):
        g, T = graphs.mlp(rng), 6
        if case.endswith("normalised"):
            g.replace_op("x", Input((1, 8, 8), mean=np.array([0.5]), std=np.array([0.25])))
        x = rng.random((3, 1, 8, 8))
    else:
        g = spike_mlp(rng) if case == "mlp-spike" else spike_cnn(rng)
        T = g.metadata["timesteps"]
        x = (rng.random((3, T, 1, 8, 8)) < 0.3).astype(np.float64)
    path = tmp_path / "model.net"
    ex = nx.write_netx(g, path)
    ref, pops = _reference(g, x, T, ex)
    got = run_netx_numpy(path, x, T)
    assert len(got) == len(pops)
    flt = torch_backend.run(g, x, T, record=True)
    for tr, p in zip(got, pops):
        want = ref.trains[p].reshape(T, x.shape[0], -1)
        assert np.array_equal(tr, want), f"{case}: layer {p} differs"
        assert 3 <= want.sum() and want.mean() < 0.9, f"{case}: trivial firing in {p}"
        assert (ref.trains[p] == flt.trains[p]).mean() > 0.85     # close to the float network


def test_structure_and_roundtrip(tmp_path):
    rng = np.random.default_rng(4)
    g = spike_cnn(rng)
    path = tmp_path / "model.net"
    ex = nx.write_netx(g, path)
    plan, fx = ex.plan, ex.plan.fixed
    assert fx.netx and all(fx.conns[c.name].weight_exp == 0 for c in plan.conns if c.role in ("synapse", "bias"))
    attrs, layers = _layers(path)
    assert [lay["type"] for lay in layers] == ["input", "conv", "conv", "flatten", "dense"]
    assert attrs["snncc_reset_offset"] == 1 and attrs["snncc_reset_interval_extra"] == 3
    assert list(layers[0]["shape"]) == [1, 8, 8] and "neuron" not in layers[0]
    c1, c2, fc = layers[1], layers[2], layers[4]
    assert list(c1["shape"]) == [3, 8, 8] and list(c2["shape"]) == [4, 4, 4] and list(fc["shape"]) == [5]
    assert list(c2["stride"]) == [2, 2] and list(c2["padding"]) == [1, 1] and list(c2["dilation"]) == [1, 1]
    assert c2["groups"] == 1 and c1["weight"].shape == (3, 1, 3, 3) and fc["weight"].shape == (5, 64)  # avg pool folded in
    for lay, pop, syn in ((c1, "s1", "c1->s1"), (c2, "s2", "c2->s2"), (fc, "s3", "fc->s3")):
        q, fp = fx.conns[syn], fx.pops[pop]
        assert np.array_equal(lay["weight"], lf.lava_weights(q.weight, q.sign_mode))   # the plan's integers
        assert lay["weight"].dtype.kind == "i" and np.abs(lay["weight"]).max() <= 256
        n = lay["neuron"]
        assert n["type"] == "CUBA" and n["iDecay"] == fp.du + 1 == 4096 and n["vDecay"] == fp.dv == 2048
        assert n["vThMant"] == fp.vth and n["refDelay"] == 1 and not n["gradedSpike"]
        bias = lf.lava_weights(fx.conns[f"{pop}.bias@{plan.pops[pop].depth}"].weight,
                                fx.conns[f"{pop}.bias@{plan.pops[pop].depth}"].sign_mode)[:, 0]
        got = np.repeat(lay["bias"], bias.size // lay["bias"].size)
        assert np.array_equal(got, bias)
        if syn != "fc->s3":   # a_in units: float weight x 1/tau x 2^k, to half a mantissa step (mixed: 2 m)
            want = np.asarray(g.op(syn.split("->")[0]).weight) * plan.pops[pop].scale * 2.0 ** fp.k
            assert np.abs(lay["weight"] - want).max() <= (1.0 if q.sign_mode == "mixed" else 0.5) + 1e-9
    # the threshold in v units: vth << 6 (+1: fires on >) is theta 2^(k+6) to within 32 units
    fp = fx.pops["s2"]
    assert abs((64 * fp.vth + 1) - 0.75 * 2.0 ** (fp.k + 6)) <= 33


def test_direct_input_host_layer(tmp_path):
    rng = np.random.default_rng(4)
    g = graphs.mlp(rng)
    ex = nx.write_netx(g, tmp_path / "m.net")
    attrs, layers = _layers(tmp_path / "m.net")
    assert attrs["snncc_reset_offset"] == 0 and [lay["type"] for lay in layers] == ["input", "dense", "dense"]
    host = layers[0]
    assert host["neuron"]["vThMant"] == ex.plan.fixed.pops["lif0"].vth and list(host["shape"]) == [48]
    np.testing.assert_array_equal(host["hostWeight"], g.op("fc0").weight)
    np.testing.assert_array_equal(host["hostBias"], g.op("fc0").bias)
    assert host["attrs"]["host_scale"] == 0.5 and host["attrs"]["host_scale_exp"] == ex.plan.fixed.pops["lif0"].k
    assert "weight" not in host and "bias" not in host           # netx would read these as scalars


def _optimize_weight_bits(w):
    """netx's optimize_weight_bits (lava-dl netx/utils.py), re-derived: integer weights -> Lava
    Dense (weights << s, weight_exp = -s, num_weight_bits) with the same effective weights."""
    mx, mn = int(w.max()), int(w.min())
    signed = int(mx > 0 and mn < 0)
    if mn >= 0:
        scale = 255 / mx
    elif mx < 0:
        scale = -256 / mn
    else:
        scale = min(127 / mx, -128 / mn)
    s = int(np.floor(np.log2(scale))) + signed
    n = 8
    while n > 0 and np.any(w % (2 ** n)):
        n -= 1
    n -= signed
    return (w.astype(np.int64) << s), int(8 - s - n), -s


def test_lava_built_like_netx_matches_integer_reference(tmp_path):
    """Build the file's network with Lava 0.10 processes the way netx's loader does (Dense with
    optimize_weight_bits' mantissa/exponent, LIFReset with du = iDecay - 1, dv = vDecay, vth = vThMant,
    bias_exp 6, reset_offset = R + 1 + layer) and run it fixed_pt on a stream of samples."""
    try:
        from snncc.compat.lava import import_lava
        L = import_lava()
    except Exception as e:  # pragma: no cover
        pytest.skip(f"lava unavailable: {e}")
    from lava.proc.lif.process import LIFReset
    rng = np.random.default_rng(4)
    g = graphs.mlp(rng)
    T, B = 6, 2
    x = rng.random((B, 1, 8, 8))
    path = tmp_path / "model.net"
    ex = nx.write_netx(g, path)
    attrs, layers = _layers(path)
    R = T + int(attrs["snncc_reset_interval_extra"])
    off = int(attrs["snncc_reset_offset"])
    neurons, syns = [], []
    for i, lay in enumerate(layers):
        n = lay["neuron"]
        bias = lay.get("bias", np.zeros(int(np.prod(lay["shape"])), np.int64)).astype(np.int32)
        neurons.append(LIFReset(shape=(int(np.prod(lay["shape"])),), du=int(n["iDecay"]) - 1, dv=int(n["vDecay"]),
                                vth=int(n["vThMant"]), bias_mant=bias, bias_exp=6, reset_interval=R,
                                reset_offset=off + 1 + i))
        if lay["type"] == "dense":
            w, bits, exp = _optimize_weight_bits(lay["weight"])
            syns.append(L.Dense(weights=w.astype(np.int32), weight_exp=exp, num_weight_bits=bits))
            neurons[-2].s_out.connect(syns[-1].s_in)
            syns[-1].a_out.connect(neurons[-1].a_in)
    sinks = [L.SinkRingBuffer(shape=nrn.a_in.shape, buffer=B * R) for nrn in neurons]
    for nrn, snk in zip(neurons, sinks):
        nrn.s_out.connect(snk.a_in)
    host = layers[0]
    cfg = L.Loihi2SimCfg(select_tag="fixed_pt")
    try:
        for b in range(B):
            cur = _host_current(host, x[b])
            mant = np.rint(cur * host["attrs"]["host_scale"] * 2.0 ** host["attrs"]["host_scale_exp"])
            if b == 0:
                neurons[0].bias_mant.init = mant.astype(np.int32)
            else:
                neurons[0].bias_mant.set(mant.astype(np.int32))
            neurons[0].run(condition=L.RunSteps(R), run_cfg=cfg)
        data = [s.data.get() for s in sinks]
    finally:
        neurons[0].stop()
    ref = lf.run_integer(g, x, T, plan=ex.plan, record=True)
    for i, p in enumerate(g.populations()):
        cols = np.stack([data[i][:, b * R + off + i: b * R + off + i + T] for b in range(B)])  # (B, n, T)
        got = (cols.transpose(2, 0, 1) > 0).astype(np.uint8)
        assert np.array_equal(got, ref.trains[p].reshape(T, B, -1)), f"layer {p} differs"
        assert got.sum() >= 3


def test_refusals_name_the_node(tmp_path):
    rng = np.random.default_rng(0)
    cases = [
        (graphs.cnn(rng), r"node 'mp' \(max Pool\).*no netx layer"),
        (graphs.residual(rng, "sew"), r"node 'add' \(Add\)"),
        (graphs.residual(rng, "spike"), r"node 'sn0' \(Neuron\): feeds 2 nodes"),
        (graphs.rnn_hard(rng), r"edge 'hh' -> 'h' is recurrent"),
    ]
    for g, pattern in cases:
        with pytest.raises(lb.LoweringError, match=pattern) as ei:
            nx.write_netx(g, tmp_path / "x.net")
        assert str(ei.value).startswith("netx: ") and "\n" not in str(ei.value)
    soft = SpikeGraph("soft", {"timesteps": 4})
    soft.add("x", Input((4,), "spike"))
    soft.add("fc", Dense(rng.normal(size=(3, 4))), ["x"])
    soft.add("h", Neuron(NeuronParams("if", v_th=1.0, reset="soft")), ["fc"])
    soft.add("out", Readout("count"), ["h"])
    with pytest.raises(lb.LoweringError, match=r"'h'.*soft reset"):
        nx.write_netx(soft, tmp_path / "x.net")
    # an avg pool folded into a conv makes an unrolled dense layer that a later conv cannot read
    g = SpikeGraph("pool-conv", {"timesteps": 4})
    g.add("x", Input((1, 8, 8), "spike"))
    g.add("c1", graphs.conv(rng, 1, 2), ["x"])
    g.add("s1", Neuron(LIF), ["c1"])
    g.add("ap", Pool("avg", (2, 2), (2, 2)), ["s1"])
    g.add("c2", graphs.conv(rng, 2, 2), ["ap"])
    g.add("s2", Neuron(LIF), ["c2"])
    g.add("c3", graphs.conv(rng, 2, 2), ["s2"])
    g.add("s3", Neuron(LIF), ["c3"])
    g.add("out", Readout("count"), ["s3"])
    with pytest.raises(lb.LoweringError, match=r"node 'c3' \(Conv\): reads a 1-D netx layer"):
        nx.write_netx(g, tmp_path / "x.net")
    assert not list(tmp_path.iterdir())                  # nothing (half-)written


# -- CLI ---------------------------------------------------------------------------------------
def invoke(*args):
    from snncc.cli import main
    return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])


def test_cli_compile_netx(tmp_path):
    rng = np.random.default_rng(4)
    model = tmp_path / "m.snn.onnx"
    serialize.save(graphs.mlp(rng), model)
    out = tmp_path / "art"
    res = invoke("compile", model, "--target", "lava", "-o", out, "--netx")
    assert res.exit_code == 0, res.stderr
    assert (out / nx.NETX_FILE).is_file() and "netx HDF5 model.net: 3 layers" in res.stdout
    assert "reset_interval=T + 2" in (out / "summary.txt").read_text()
    cfg = json.loads((out / "lava.json").read_text())
    assert cfg["netx"]["file"] == nx.NETX_FILE and cfg["netx"]["reset_offset"] == 0
    _, layers = _layers(out / nx.NETX_FILE)
    assert [lay["type"] for lay in layers] == ["input", "dense", "dense"]
    # refused: one line, exit 2, nothing written (not even the Lava artifact)
    bad = tmp_path / "cnn.snn.onnx"
    serialize.save(graphs.cnn(rng), bad)
    res = invoke("compile", bad, "--target", "lava", "-o", tmp_path / "bad", "--netx")
    assert res.exit_code == 2 and res.stderr.startswith("error: netx: node 'mp'")
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()
    res = invoke("compile", model, "--target", "numba", "-o", tmp_path / "n", "--netx")
    assert res.exit_code == 2 and "--netx applies to --target lava" in res.stderr
