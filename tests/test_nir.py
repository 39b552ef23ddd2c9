"""NIR import/export: every supported node against an independent Euler oracle (tests/nir_oracle.py),
the > vs >= boundary, refusals by node, round trips, and the CLI."""
import numpy as np
import pytest

nir = pytest.importorskip("nir")

from click.testing import CliRunner  # noqa: E402

from nir_graphs import chain, lif  # noqa: E402
from nir_oracle import simulate  # noqa: E402
from snncc.backends import torch_ref as torch_backend  # noqa: E402
from snncc.cli import main  # noqa: E402
from snncc.ir import serialize  # noqa: E402
from snncc.ir.graph import SpikeGraph  # noqa: E402
from snncc.ir.ops import Dense, Input, Neuron, Readout  # noqa: E402
from snncc.neuron import NeuronParams  # noqa: E402
from snncc.nir import NIRExportError, NIRImportError, from_nir, to_nir, write_nir  # noqa: E402
from snncc.sims import numba_sim  # noqa: E402

DT = 1e-3


def invoke(*args):
    return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])


def every_node_graph(rng):
    """Input -> Conv2d -> Scale -> LIF (per-neuron tau/r/threshold, v_leak != v_reset) -> SumPool2d -> IF
    -> AvgPool2d -> Flatten -> Linear -> CubaLIF with a recurrent Affine -> Output (a cycle)."""
    c, h = 3, 8
    shape1, shape2 = (c, h, h), (c, h // 2, h // 2)
    nodes = {
        "input": nir.Input(input_type=np.array([1, h, h])),
        "conv": nir.Conv2d(input_shape=(h, h), weight=rng.normal(0, 0.8, (c, 1, 3, 3)), stride=1, padding=1,
                           dilation=1, groups=1, bias=rng.normal(0.2, 0.1, c)),
        "scale": nir.Scale(scale=np.broadcast_to(np.array([1.5, 0.8, 1.2])[:, None, None], shape1).copy()),
        "lif": nir.LIF(tau=rng.uniform(2e-3, 6e-3, shape1),  # r per channel: v_leak - v_reset folds into the conv bias
                       r=np.broadcast_to(rng.uniform(0.5, 2.0, (c, 1, 1)), shape1).copy(),
                       v_leak=np.full(shape1, 0.1), v_threshold=rng.uniform(0.4, 0.8, shape1),
                       v_reset=np.full(shape1, -0.1)),
        "sum": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "if": nir.IF(r=np.full(shape2, 300.0), v_threshold=rng.uniform(0.8, 1.2, shape2), v_reset=np.zeros(shape2)),
        "avg": nir.AvgPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([c, 2, 2])}, start_dim=0, end_dim=-1),
        "fc": nir.Linear(weight=rng.normal(0, 2.0, (6, 12))),
        "cuba": nir.CubaLIF(tau_syn=rng.uniform(2e-3, 4e-3, 6), tau_mem=rng.uniform(3e-3, 8e-3, 6),
                            r=rng.uniform(1.0, 3.0, 6), v_leak=np.zeros(6), v_threshold=rng.uniform(0.2, 0.4, 6),
                            v_reset=np.zeros(6), w_in=rng.uniform(0.5, 1.5, 6)),
        "rec": nir.Affine(weight=rng.normal(0, 0.5, (6, 6)), bias=np.zeros(6)),
        "output": nir.Output(output_type=np.array([6])),
    }
    edges = [("input", "conv"), ("conv", "scale"), ("scale", "lif"), ("lif", "sum"), ("sum", "if"), ("if", "avg"),
             ("avg", "flat"), ("flat", "fc"), ("fc", "cuba"), ("cuba", "rec"), ("rec", "cuba"), ("cuba", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _trains(graph, x, steps, run):
    res = run(graph, x, steps, record=True)
    return {n: res.trains[n] for n in graph.populations()}


@pytest.mark.parametrize("run", [torch_backend.run, numba_sim.run], ids=["torch", "numba"])
def test_every_supported_node_matches_the_euler_oracle(rng, tmp_path, run):
    ng = every_node_graph(rng)
    path = tmp_path / "every.nir"
    nir.write(path, ng)
    g = from_nir(nir.read(path, type_check=False), dt=DT, encoding="spike")
    steps, batch = 25, 4
    x = (rng.random((batch, steps, 1, 8, 8)) < 0.5).astype(np.float64)
    want = simulate(ng, x, DT, record=("lif", "if", "cuba"))
    got = _trains(g, x, steps, run)
    for pop in ("lif", "if", "cuba"):
        assert want[pop].sum() > 10, pop  # every population is active: the comparison means something
        np.testing.assert_array_equal(got[pop], want[pop].astype(np.uint8), err_msg=pop)
    # the cycle closed through a delayed edge into the population; per-neuron arrays were kept
    assert [(p.src, p.delay) for p in g.inputs("cuba")] == [("fc", 0), ("rec", 1)]
    assert g.op("lif").tau is not None and g.op("cuba").tau_syn is not None


@pytest.mark.parametrize("run", [torch_backend.run, numba_sim.run], ids=["torch", "numba"])
def test_conv1d_and_one_step_delays_match_the_oracle(rng, run):
    """Input (2, 10) -> Conv1d -> LIF -> Delay(1 step) -> Flatten -> Affine -> IF -> Output, and a Delay(0)."""
    c, L = 3, 8
    nodes = {"input": nir.Input(input_type=np.array([2, 10])),
             "conv": nir.Conv1d(input_shape=10, weight=rng.normal(0, 1.0, (c, 2, 3)), stride=1, padding=0, dilation=1,
                                groups=1, bias=rng.normal(0.3, 0.1, c)),
             "lif": nir.LIF(tau=rng.uniform(2e-3, 5e-3, (c, L)), r=np.ones((c, L)), v_leak=np.zeros((c, L)),
                            v_threshold=rng.uniform(0.3, 0.6, (c, L)), v_reset=np.zeros((c, L))),
             "d1": nir.Delay(delay=np.full((c, L), DT)),
             "flat": nir.Flatten(input_type={"input": np.array([c, L])}, start_dim=0, end_dim=-1),
             "fc": nir.Affine(weight=rng.normal(0, 1.0, (5, c * L)), bias=np.zeros(5)),
             "d0": nir.Delay(delay=np.zeros(5)),
             "if": nir.IF(r=np.full(5, 1 / DT), v_threshold=np.full(5, 1.0), v_reset=np.zeros(5)),
             "output": nir.Output(output_type=np.array([5]))}
    edges = [("input", "conv"), ("conv", "lif"), ("lif", "d1"), ("d1", "flat"), ("flat", "fc"), ("fc", "d0"),
             ("d0", "if"), ("if", "output")]
    ng = nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)
    g = from_nir(ng, dt=DT, encoding="spike")
    assert [(p.src, p.delay) for p in g.inputs("flat")] == [("lif", 1)]
    x = (rng.random((4, 15, 2, 10)) < 0.5).astype(np.float64)
    want = simulate(ng, x, DT, record=("lif", "if"))
    got = _trains(g, x, 15, run)
    for pop in ("lif", "if"):
        assert want[pop].sum() > 10
        np.testing.assert_array_equal(got[pop].reshape(want[pop].shape), want[pop].astype(np.uint8), err_msg=pop)


@pytest.mark.parametrize("kind", ["LI", "LI-r=tau/dt", "CubaLI", "I"])
def test_integrator_readouts_match_the_oracle(rng, kind):
    """Input -> Affine -> LIF -> Affine -> {LI, CubaLI, I} -> Output: the analog membrane, averaged over T by the Readout.
    LI with r = tau/dt is snncc's integrator without input decay (no gain folded into the synapse)."""
    o = 4
    head = {"LI": nir.LI(tau=np.full(o, 4e-3), r=rng.uniform(0.5, 2.0, o), v_leak=np.full(o, 0.2)),
            "LI-r=tau/dt": nir.LI(tau=np.full(o, 4e-3), r=np.full(o, 4e-3 / DT), v_leak=np.full(o, 0.2)),
            "CubaLI": nir.CubaLI(tau_syn=np.full(o, 2e-3), tau_mem=np.full(o, 5e-3), r=rng.uniform(0.5, 2.0, o),
                                 v_leak=np.full(o, -0.1), w_in=rng.uniform(0.5, 1.5, o)),
            "I": nir.I(r=rng.uniform(100, 300, o))}[kind]
    ng = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([8])),
                             "fc0": nir.Affine(weight=rng.normal(0, 1.5, (10, 8)), bias=np.zeros(10)),
                             "lif": nir.LIF(tau=np.full(10, 3e-3), r=np.ones(10), v_leak=np.zeros(10),
                                            v_threshold=np.full(10, 0.4), v_reset=np.zeros(10)),
                             "fc1": nir.Affine(weight=rng.normal(0, 1.0, (o, 10)), bias=rng.normal(0, 0.1, o)),
                             "x": head, "output": nir.Output(output_type=np.array([o]))},
                      edges=[("input", "fc0"), ("fc0", "lif"), ("lif", "fc1"), ("fc1", "x"), ("x", "output")],
                      type_check=False)
    g = from_nir(ng, dt=DT, encoding="spike")
    assert g.type_of("x").kind.value == "analog" and g.op("output").mode == "mean"
    assert g.op("x").params.decay_input == (kind != "LI-r=tau/dt")
    x = (rng.random((3, 16, 8)) < 0.5).astype(np.float64)
    want = simulate(ng, x, DT, record=("lif", "x"))
    assert want["lif"].sum() > 10
    for run in (torch_backend.run, numba_sim.run):
        res = run(g, x, 16, record=True)
        np.testing.assert_array_equal(res.trains["lif"], want["lif"].astype(np.uint8))
        np.testing.assert_allclose(res.output, want["x"].mean(axis=0), rtol=1e-12, atol=1e-12)
    back = from_nir(to_nir(g, dt=DT))  # and out again: NIR's own type check, same outputs
    assert type(to_nir(g, dt=DT).nodes["x"]).__name__ == kind.split("-")[0]
    assert back.op("x").params == g.op("x").params
    np.testing.assert_array_equal(torch_backend.run(back, x, 16).output, torch_backend.run(g, x, 16).output)


def test_direct_encoding_presents_the_sample_every_step(rng):
    w = rng.normal(0, 1.0, (5, 4))
    ng = nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([4])), "fc": nir.Affine(weight=w, bias=np.ones(5)),
                             "lif": nir.LIF(tau=np.full(5, 4e-3), r=np.full(5, 2.0), v_leak=np.zeros(5),
                                            v_threshold=np.full(5, 0.9), v_reset=np.zeros(5)),
                             "output": nir.Output(output_type=np.array([5]))},
                      edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    g = from_nir(ng, dt=DT)
    assert not g.op("lif").heterogeneous  # all-equal arrays become scalar parameters (Lava can take them)
    x = rng.random((3, 4))
    want = simulate(ng, np.repeat(x[:, None], 12, axis=1), DT, record=("lif",))["lif"]
    for run in (torch_backend.run, numba_sim.run):
        np.testing.assert_array_equal(_trains(g, x, 12, run)["lif"], want.astype(np.uint8))


def _if_graph(thr, r=1.0):
    return nir.NIRGraph(nodes={"input": nir.Input(input_type=np.array([1])),
                               "fc": nir.Linear(weight=np.ones((1, 1))),
                               "if": nir.IF(r=np.array([r]), v_threshold=np.array([thr]), v_reset=np.array([0.0])),
                               "output": nir.Output(output_type=np.array([1]))},
                        edges=[("input", "fc"), ("fc", "if"), ("if", "output")])


def test_threshold_boundary_nir_fires_only_above():
    """v reaches exactly 1.0 at step 2: NIR (v > thr) must not fire there, snncc (h >= v_th) would."""
    g = from_nir(_if_graph(1.0), dt=1.0)
    assert g.op("if").params.v_th == np.nextafter(1.0, np.inf)
    x = np.array([[0.5]])
    for run in (torch_backend.run, numba_sim.run):
        assert _trains(g, x, 4, run)["if"][:, 0, 0].tolist() == [0, 0, 1, 0]
    native = SpikeGraph("native")
    native.add("x", Input((1,)))
    native.add("fc", Dense(np.ones((1, 1))), ["x"])
    native.add("if", Neuron(NeuronParams("if", v_th=1.0)), ["fc"])
    native.add("out", Readout(), ["if"])
    assert _trains(native, x, 4, torch_backend.run)["if"][:, 0, 0].tolist() == [0, 1, 0, 1]
    # export: snncc's >= 1.0 is NIR's > previous float; the oracle fires at step 2 like snncc
    exported = to_nir(native, dt=1.0)
    assert exported.nodes["if"].v_threshold[0] == np.nextafter(1.0, -np.inf)
    assert simulate(exported, np.full((1, 4, 1), 0.5), 1.0)["out"][:, 0, 0].tolist() == [0, 1, 0, 1]
    # and back: the identity
    assert from_nir(exported, dt=1.0).op("if").params.v_th == 1.0


def test_dt_is_required_unless_the_file_states_it():
    with pytest.raises(NIRImportError, match="pass dt"):
        from_nir(chain(lif()))


def _snncc_graphs(rng):
    from graphs import mlp
    yield "mlp", mlp(rng), (rng.random((3, 64)) * 2, "direct")
    het = SpikeGraph("het-cuba-rnn")
    het.add("x", Input((6,), encoding="spike"))
    het.add("fc", Dense(rng.normal(0, 1.5, (5, 6)), rng.normal(0, 0.1, 5)), ["x"])
    het.add("pop", Neuron(NeuronParams("lif", tau=3.0, v_th=0.3, tau_syn=2.0), tau=rng.uniform(1.5, 6, 5),
                          v_th=rng.uniform(0.2, 0.5, 5), tau_syn=rng.uniform(1.0, 4.0, 5)), ["fc"])
    het.add("rec", Dense(rng.normal(0, 0.8, (5, 5))), ["pop"])
    het.connect("rec", "pop", 1)
    het.add("if", Neuron(NeuronParams("if", v_th=1.0, v_reset=-0.5)), ["rec"])
    het.add("out", Readout(), ["if"])
    yield "het", het, ((rng.random((3, 20, 6)) < 0.5).astype(np.float64), "spike")
    nd = SpikeGraph("no-input-decay")  # MSKD eq. 1's LIF (decay_input=False): NIR's r = tau / dt
    nd.add("x", Input((6,), encoding="spike"))
    nd.add("fc", Dense(rng.normal(0, 0.5, (5, 6))), ["x"])
    nd.add("eq1", Neuron(NeuronParams.from_decay(0.2, 0.5), tau=rng.uniform(1.2, 5, 5)), ["fc"])
    nd.add("fc2", Dense(rng.normal(0.3, 0.5, (4, 5))), ["eq1"])
    nd.add("cuba", Neuron(NeuronParams("lif", tau=4.0, v_th=0.6, v_reset=-0.1, tau_syn=2.0, decay_input=False)),
           ["fc2"])
    nd.add("out", Readout(), ["cuba"])
    yield "no-input-decay", nd, ((rng.random((3, 20, 6)) < 0.5).astype(np.float64), "spike")


def test_snncc_to_nir_to_snncc_is_the_identity_on_spikes(rng, tmp_path):
    for name, g, (x, _) in _snncc_graphs(rng):
        path = tmp_path / f"{name}.nir"
        write_nir(g, path, dt=1e-4)
        ng = nir.read(path)  # nir's own reader with its type checks on
        back = from_nir(path)  # dt comes back from the file's metadata
        steps = x.shape[1] if x.ndim == 3 else 8
        for run in (torch_backend.run, numba_sim.run):
            a, b = _trains(g, x, steps, run), _trains(back, x, steps, run)
            assert sum(v.sum() for v in a.values()) > 10
            for pop in g.populations():
                np.testing.assert_array_equal(a[pop], b[pop], err_msg=f"{name}/{pop}")
        for pop in g.populations():  # parameters come back bit for bit
            assert back.op(pop).params.decay_input == g.op(pop).params.decay_input, f"{name}/{pop}"
            pa = g.op(pop).per_neuron(g.type_of(pop).shape)
            pb = back.op(pop).per_neuron(back.type_of(pop).shape)
            for k in pa:  # thresholds and resets exactly; time constants within float64 rounding of tau * dt / dt
                np.testing.assert_allclose(pa[k], pb[k], rtol=0 if k.startswith("v_") else 1e-15,
                                           err_msg=f"{name}/{pop}/{k}")
        assert len(ng.nodes) == len(g)
        for key in ("timesteps", "dataset"):  # snncc's run metadata rides along in NIR's metadata
            assert back.metadata.get(key) == g.metadata.get(key)


@pytest.mark.parametrize("which", [1, 2], ids=["het", "no-input-decay"])
def test_nir_export_matches_the_euler_oracle(rng, which):
    _, g, (x, _) = list(_snncc_graphs(rng))[which]
    ng = to_nir(g, dt=1e-4)
    pops = g.populations()
    want = simulate(ng, x, 1e-4, record=tuple(pops))
    got = _trains(g, x, x.shape[1], torch_backend.run)
    for pop in pops:
        assert got[pop].sum() > 5, pop
        np.testing.assert_array_equal(got[pop], want[pop].astype(np.uint8))
    if which == 2:  # the input enters v unscaled: NIR's r is tau in steps
        np.testing.assert_array_equal(ng.nodes["eq1"].r, g.op("eq1").tau)


def test_export_refuses_what_nir_cannot_express(rng):
    from graphs import mlp
    g = mlp(rng)
    g.replace_op("lif0", Neuron(NeuronParams("lif", tau=2.0, v_th=0.5, reset="soft")))
    with pytest.raises(NIRExportError, match="node 'lif0' .*soft reset"):
        to_nir(g)


def test_lava_refuses_heterogeneous_populations_by_node(rng):
    from snncc.backends.lava import LoweringError, lower
    g = SpikeGraph("het")
    g.add("x", Input((6,), encoding="spike"))
    g.add("fc", Dense(rng.normal(0, 1.5, (5, 6))), ["x"])
    g.add("pop", Neuron(NeuronParams("lif", tau=3.0, v_th=0.3), v_th=rng.uniform(0.2, 0.5, 5)), ["fc"])
    g.add("out", Readout(), ["pop"])
    with pytest.raises(LoweringError, match="node 'pop'.*per-neuron parameters"):
        lower(g)


def test_heterogeneous_graph_survives_the_snn_onnx_file(rng, tmp_path):
    _, g, (x, _) = list(_snncc_graphs(rng))[1]
    serialize.save(g, tmp_path / "h.snn.onnx")
    back = serialize.load(tmp_path / "h.snn.onnx")
    np.testing.assert_array_equal(back.op("pop").tau_syn, g.op("pop").tau_syn)
    a, b = _trains(g, x, 20, numba_sim.run), _trains(back, x, 20, numba_sim.run)
    np.testing.assert_array_equal(a["pop"], b["pop"])


def test_cli_import_validate_run_export(rng, tmp_path):
    ng = chain(lif(tau=np.full(4, 2e-3), v_threshold=np.full(4, 0.3)))
    nir.write(tmp_path / "net.nir", ng)
    r = invoke("import", tmp_path / "net.nir", "-o", tmp_path / "net.snn.onnx", "--dt", DT)
    assert r.exit_code == 0, r.stderr
    assert "imported 4 nodes (1 populations, dt=0.001 s)" in r.output
    assert invoke("validate", tmp_path / "net.snn.onnx").exit_code == 0
    r = invoke("export", tmp_path / "net.snn.onnx", "--format", "nir", "-o", tmp_path / "back.nir")
    assert r.exit_code == 0, r.stderr
    assert isinstance(nir.read(tmp_path / "back.nir"), nir.NIRGraph)


@pytest.mark.parametrize("content, args, message", [
    (b"not hdf5", [], "not a readable NIR file"),
    (None, ["--dt", "1e-3"], "cannot read NIR file"),
    ("graph", [], "NIR files do not store the time step"),
    ("graph", ["--dt", "-1"], "dt must be a positive number"),
    ("li", ["--dt", "1e-3"], "node 'x' (LI): per-neuron tau"),
])
def test_cli_import_bad_input_one_line_exit_2(tmp_path, content, args, message):
    path = tmp_path / "in.nir"
    if content == "graph":
        nir.write(path, chain(lif()))
    elif content == "li":
        nir.write(path, chain(nir.LI(tau=np.arange(1, 5) * 1e-2, r=np.ones(4), v_leak=np.zeros(4))))
    elif content is not None:
        path.write_bytes(content)
    r = invoke("import", path, "-o", tmp_path / "o.snn.onnx", *args)
    assert r.exit_code == 2, (r.output, r.stderr)
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.snn.onnx").exists()


def test_cli_export_nir_refuses_soft_reset(rng, tmp_path):
    from graphs import mlp
    g = mlp(rng)
    g.replace_op("lif1", Neuron(NeuronParams("lif", tau=2.0, v_th=0.5, reset="soft")))
    serialize.save(g, tmp_path / "soft.snn.onnx")
    r = invoke("export", tmp_path / "soft.snn.onnx", "--format", "nir", "-o", tmp_path / "o.nir")
    assert r.exit_code == 2 and "node 'lif1'" in r.stderr and "soft reset" in r.stderr
    assert not (tmp_path / "o.nir").exists()


def _cuba_graph(rng, bias=False):
    g = SpikeGraph("cuba")
    g.add("x", Input((12,), encoding="spike"))
    g.add("fc0", Dense(rng.normal(0, 2.0, (10, 12)), rng.normal(0, 0.1, 10) if bias else None), ["x"])
    g.add("cuba", Neuron(NeuronParams("lif", tau=3.0, v_th=0.4, tau_syn=2.5)), ["fc0"])
    g.add("fc1", Dense(rng.normal(0, 2.0, (4, 10))), ["cuba"])
    g.add("lif", Neuron(NeuronParams("lif", tau=2.0, v_th=0.3)), ["fc1"])
    g.add("out", Readout(), ["lif"])
    return g


def test_cuba_runs_on_lava_float_like_torch(rng):
    """Lava's LIF with du = 1/tau_syn is the current-based LIF (imported CubaLIF), spike for spike;
    in fixed point (du = 4096/tau_syn - 1) Lava's bit-accurate model equals snncc's integer reference."""
    from lavatest import require_lava
    lb, lf = require_lava()
    g = _cuba_graph(rng)
    x = (rng.random((3, 20, 12)) < 0.4).astype(np.float64)
    want = torch_backend.run(g, x, 20, record=True).trains
    got = lb.run(g, x, 20, record=True).trains
    assert want["cuba"].sum() > 10 and want["lif"].sum() > 5
    for pop in ("cuba", "lif"):
        np.testing.assert_array_equal(got[pop], want[pop], err_msg=pop)
    with pytest.raises(lb.LoweringError, match="node 'cuba'.*synapse bias"):
        lb.lower(_cuba_graph(rng, bias=True))
    plan = lb.lower(g, lb.Options(fixed_point=True))
    assert plan.fixed.pops["cuba"].du == round(4096 / 2.5) - 1 and plan.fixed.pops["lif"].du == 4095
    fixed = lb.run((g, plan), x, 20, record=True).trains
    integer = lf.run_integer(g, x, 20, plan=plan, record=True).trains
    for pop in ("cuba", "lif"):
        np.testing.assert_array_equal(fixed[pop], integer[pop], err_msg=pop)
    assert fixed["cuba"].sum() > 10 and fixed["lif"].sum() > 5
    slow = SpikeGraph("slow")  # u cannot decay slower than (0 + 1)/4096 per step
    slow.add("x", Input((3,), encoding="spike"))
    slow.add("fc", Dense(np.ones((2, 3))), ["x"])
    slow.add("pop", Neuron(NeuronParams("lif", tau=3.0, v_th=0.5, tau_syn=9000.0)), ["fc"])
    slow.add("out", Readout(), ["pop"])
    lb.lower(slow)  # float: fine
    with pytest.raises(lb.LoweringError, match="node 'pop'.*tau_syn = 9000 steps.*12-bit du"):
        lb.lower(slow, lb.Options(fixed_point=True))
