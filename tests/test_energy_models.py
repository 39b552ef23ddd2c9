"""Energy models (kundu, lemaire, loihi, user files) against the hand-computed worked examples of
shared/design/energy.md §4.4, closed-form properties, and break-even rates."""
import json

import pytest
from graphs import LIF, mlp

from snncc.energy import (Constant, EnergyModelError, Kundu, LayerCounts, Lemaire, Loihi, count_layers, energy_report,
                          get_model, price_counts)
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Conv, Input, Neuron, Readout

S = 3   # samples the synthetic activity is summed over


def mlp_784(rng, encoding):
    g = mlp(rng, sizes=(784, 1024, 10), shape=(1, 28, 28))
    if encoding == "spike":
        g2 = SpikeGraph("mlp", dict(g.metadata))
        for n in g.order():
            g2.add(n, Input((1, 28, 28), "spike") if n == "x" else g.op(n), [p.src for p in g.inputs(n)])
        g = g2
    return g


def activity(T, r_in=None, r_hidden=0.0, r_out=0.0):
    """Spike totals over S samples for per-step rates (the measured quantity a backend returns)."""
    act = {"lif0": r_hidden * 1024 * T * S, "lif1": r_out * 10 * T * S}
    if r_in is not None:
        act["x"] = act["flat"] = r_in * 784 * T * S
    return act


def test_case_a_direct_input_kundu(rng):
    g = mlp_784(rng, "direct")
    rep = energy_report(g, activity(4, r_hidden=0.15), S, 4)
    # L1: 802,816 MACs once (3,692,953.6 pJ); L2: 10,240 x 0.6 = 6,144 ACs (5,529.6 pJ)
    assert rep.total_energy_pj == pytest.approx(3_698_483.2)
    assert rep.ann_energy_pj == pytest.approx(3_740_057.6)
    assert rep.ann_over_snn == pytest.approx(1.01124, abs=5e-6)
    per_step = energy_report(g, activity(4, r_hidden=0.15), S, 4, first_layer="per_step")
    assert per_step.total_energy_pj == pytest.approx(14_777_344.0)


def test_case_b_rate_input_kundu_user_file_and_loihi(rng, tmp_path):
    g = mlp_784(rng, "spike")
    act = activity(10, r_in=0.1, r_hidden=0.05, r_out=0.05)
    rep = energy_report(g, act, S, 10)
    assert [lay.counts.sops for lay in rep.layers] == pytest.approx([802_816, 5_120])
    assert rep.total_energy_pj == pytest.approx(727_142.4)
    assert rep.ann_over_snn == pytest.approx(5.14350, abs=5e-6)
    # "extended" Kundu: a user file adds 0.9 pJ per neuron update, (1024 + 10) x 10 = 10,340 updates
    (tmp_path / "upd.toml").write_text('base = "kundu"\n[constants.E_UPDATE]\npj = 0.9\n'
                                       'source = "energy.md worked example B"\ngrade = "test"\n')
    model = get_model(str(tmp_path / "upd.toml"))
    assert energy_report(g, act, S, 10, model).total_energy_pj == pytest.approx(736_448.4)
    assert model.constants()["E_UPDATE"].grade == "test (user file)"
    # Loihi as the reference prices it: every update at 52 pJ, 1,296 events at 1.7 pJ, no hops
    flat = {"E_UPD_ACTIVE": Loihi.DEFAULTS["E_UPD_INACTIVE"],
            "E_HOP_EW": Constant(0.0, "test", "test"), "E_HOP_NS": Constant(0.0, "test", "test")}
    rep = energy_report(g, act, S, 10, Loihi(flat))
    assert rep.total_energy_pj == pytest.approx(19_067_289.6 + 537_680 + 2_203.2)
    # Loihi defaults: x on core 0, lif0 on core 1, lif1 on core 2 (one east-west hop per event);
    # updates active only in steps where the neuron fires (512 and 5 spikes)
    rep = energy_report(g, act, S, 10, Loihi())
    hand = (807_936 * 23.6 + (10_240 - 512) * 52 + 512 * 81 + (100 - 5) * 52 + 5 * 81 + (784 + 512) * (1.7 + 3.0))
    assert rep.total_energy_pj == pytest.approx(hand)
    assert rep.breakdown()["routing"] == pytest.approx(1296 * 4.7)
    assert "lif0: core 1" in rep.extra["placement"]


def test_case_c_single_conv(rng):
    g = SpikeGraph("conv", {})
    g.add("x", Input((64, 32, 32), "spike"))
    g.add("c", Conv(rng.normal(0, 0.1, (64, 64, 3, 3)), None, (1, 1), (1, 1)), ["x"])
    g.add("s", Neuron(LIF), ["c"])
    g.add("out", Readout("count"), ["s"])
    T = 5
    rep = energy_report(g, {"x": 0.17 * 64 * 32 * 32 * T * S, "s": 0.0}, S, T)   # zeta_in = 0.85
    assert rep.layers[0].counts.flops == 37_748_736
    assert rep.total_sops == pytest.approx(32_086_425.6)
    assert rep.total_energy_pj == pytest.approx(28_877_783.04)


def _resnet18_cifar(rate, T, shortcut_mac=False):
    """MS-ResNet-18 for CIFAR-100 (3x3/1 stem, no max-pool) as hand-built counts: uniform spike rate."""
    rows, cin, hw = [("conv1", 3 * 3 * 3 * 64 * 32 * 32, "analog")], 64, 32
    for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for b in range(2):
            s = stride if b == 0 else 1
            hw //= s
            rows += [(f"c{len(rows)}", 9 * cin * planes * hw * hw, "spike"),
                     (f"c{len(rows) + 1}", 9 * planes * planes * hw * hw, "spike")]
            if s != 1 or cin != planes:
                rows.append((f"sc{len(rows)}", cin * planes * hw * hw, "analog" if shortcut_mac else "spike"))
            cin = planes
    rows.append(("fc", 512 * 100, "spike"))
    counts = []
    for name, flops, kind in rows:
        steps = T if (kind == "analog" and (shortcut_mac or name != "conv1")) else 1
        spikes = kind == "spike"
        counts.append(LayerCounts(name=name, op="Conv", flops=flops, input=kind,
                                  macs=0.0 if spikes else float(flops * steps),
                                  sops=flops * rate * T if spikes else 0.0,
                                  input_rate=rate if spikes else None, population=None, neurons=1, firing_rate=None,
                                  timesteps=T))
    return counts


def test_case_d_ms_resnet18_cifar_kundu():
    conv = {"timesteps": 4, "samples": 1, "first_layer": "once", "graded": "events", "per": "inference"}
    counts = _resnet18_cifar(0.2125, 4)
    assert sum(c.flops for c in counts) == pytest.approx(555.5e6, rel=1e-3)
    assert price_counts(counts, Kundu(), conv).total_energy_pj / 1e9 == pytest.approx(0.432, rel=1e-3)
    # the 1x1 shortcuts see real-valued membrane inputs: MACs at every step; conv1 per step too
    counts = _resnet18_cifar(0.2125, 4, shortcut_mac=True)
    assert price_counts(counts, Kundu(), conv).total_energy_pj / 1e9 == pytest.approx(0.567, rel=1e-3)


def test_lemaire_sram_interpolation_and_hand_example(rng):
    m = Lemaire()
    words = {8 * 1024: 10.0, 32 * 1024: 20.0, 1024 * 1024: 100.0, 20 * 1024: 15.0, 1024: 10.0}
    for nbytes, pj in words.items():
        assert m.sram(nbytes / 4) == pytest.approx(pj)
    assert m.sram(2 * 1024 * 1024 / 4) == pytest.approx(100 + 1024 * 1024 * 80 / (1024 * 1024 - 32 * 1024))
    # example B's output layer (1024 -> 10, IF-free LIF, 512 input events, 5 output spikes, T = 10)
    g = mlp_784(rng, "spike")
    rep = energy_report(g, activity(10, r_in=0.1, r_hidden=0.05, r_out=0.05), S, 10, m)
    out = rep.layers[1]
    w = 20 + (10_240 * 4 - 32_768) * 80 / (1_048_576 - 32_768)   # 40 kB of weights
    assert out.breakdown["compute"] == pytest.approx(5_120 * 0.1)
    assert out.breakdown["addressing"] == pytest.approx(512 * 10 * 0.1)
    assert out.breakdown["neuron updates"] == pytest.approx(100 * (0.1 + 3.1) + 5 * 0.1)
    assert out.breakdown["memory"] == pytest.approx(5_120 * (w + 2 * 10) + 512 * 10 + 2 * 100 * 10 + 5 * 10)
    assert out.ann_breakdown == pytest.approx({"compute": 10_240 * 3.2, "memory": 10_240 * w + 1024 * 10 + 10 * 10,
                                               "addressing": 10_240 * 0.1})


@pytest.mark.parametrize("name", ["kundu", "lemaire", "loihi"])
def test_energy_is_linear_in_spike_counts_and_breakeven_is_exact(rng, name):
    g = mlp_784(rng, "spike")
    rep = energy_report(g, activity(8, r_in=0.1, r_hidden=0.05, r_out=0.02), S, 8, get_model(name))
    counts = [lay.counts for lay in rep.layers]
    model = get_model(name)
    e = {r: sum(sum(snn.values()) for snn, _ in model.price([c.at_rate(r) for c in counts]))
         for r in (0.0, 0.13, 0.4, 1.0)}
    for r in (0.13, 0.4):
        assert e[r] == pytest.approx(e[0.0] + r * (e[1.0] - e[0.0]))
    r_star = rep.breakeven_rate
    if 0 < r_star:
        at = model.price([c.at_rate(r_star) for c in counts])
        assert sum(sum(s.values()) for s, _ in at) == pytest.approx(rep.ann_energy_pj)
    for lay in rep.layers:   # per layer too
        at = model.price([c.at_rate(lay.breakeven_rate) for c in counts])[rep.layers.index(lay)][0]
        assert sum(at.values()) == pytest.approx(lay.ann_energy_pj)


def test_kundu_breakeven_closed_form(rng):
    """Kundu, spike-input layer: SOPs = FLOPs r T, so r* = E_MAC / (E_AC T) = 4.6 / (0.9 T)."""
    g = mlp_784(rng, "spike")
    rep = energy_report(g, activity(10, r_in=0.1, r_hidden=0.05), S, 10)
    assert [lay.breakeven_rate for lay in rep.layers] == pytest.approx([4.6 / 9.0] * 2)
    g = mlp_784(rng, "direct")
    rep = energy_report(g, activity(4, r_hidden=0.15), S, 4)
    assert rep.layers[0].breakeven_rate is None   # dense first layer: no rate to trade
    assert rep.breakeven_rate == pytest.approx((10_240 * 4.6) / (10_240 * 0.9 * 4))


def test_rate_one_single_step_sops_equal_dense_ops(rng):
    g = mlp_784(rng, "spike")
    for lay in energy_report(g, activity(1, r_in=1.0, r_hidden=1.0, r_out=1.0), S, 1).layers:
        assert lay.counts.sops == lay.counts.flops
    g = mlp(rng, sizes=(64, 48, 32, 10))
    counts = count_layers(g, {"lif0": 48 * S, "lif1": 32 * S, "lif2": 10 * S}, S, 1)
    assert [c.sops for c in counts[1:]] == [c.flops for c in counts[1:]]


def test_user_files_toml_json_and_one_line_errors(tmp_path):
    (tmp_path / "odin.json").write_text(json.dumps({"base": "loihi", "name": "odin", "constants": {
        "E_SYNOP": {"pj": 12.7, "source": "Frenkel et al., TBioCAS 2019", "grade": "measured silicon"}}}))
    m = get_model(str(tmp_path / "odin.json"))
    assert m.e("E_SYNOP") == 12.7 and m.e("E_SPIKE") == 1.7 and m.label == "odin (loihi equations)"
    bad = {
        "nobase.toml": ("name = 'x'\n", "base must be one of"),
        "key.toml": ("base = 'kundu'\nchip = 1\n", "unknown key 'chip'"),
        "const.toml": ("base = 'kundu'\n[constants.E_SYNOP]\npj = 1\nsource = 's'\ngrade = 'g'\n",
                       "not a constant of kundu"),
        "neg.toml": ("base = 'lemaire'\n[constants.E_ADD]\npj = -1\nsource = 's'\ngrade = 'g'\n", "non-negative"),
        "nosrc.toml": ("base = 'lemaire'\n[constants.E_ADD]\npj = 1\ngrade = 'g'\n", "missing 'source'"),
        "empty.toml": ("base = 'lemaire'\n[constants.E_ADD]\npj = 1\nsource = ' '\ngrade = 'g'\n", "non-empty"),
        "syntax.toml": ("base = \n", "not valid TOML"),
        "syntax.json": ("{", "not valid JSON"),
        "bool.json": ('{"base": "kundu", "constants": {"E_AC": {"pj": true, "source": "s", "grade": "g"}}}',
                      "finite non-negative"),
    }
    for name, (text, msg) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(EnergyModelError, match=msg) as e:
            get_model(str(tmp_path / name))
        assert "\n" not in str(e.value) and name in str(e.value)
    with pytest.raises(EnergyModelError, match="cannot read"):
        get_model(str(tmp_path / "missing.toml"))
    with pytest.raises(EnergyModelError, match="no presets"):
        get_model("loihi:fast")


def test_loihi_placement_spans_cores_and_counts_hops():
    def lay(src, n_src, pop, n_pop):
        return LayerCounts(name=f"{src}>{pop}", op="Dense", flops=n_src * n_pop, input="spike", macs=0.0,
                           sops=float(n_src * n_pop), input_rate=1.0, population=pop, neurons=n_pop,
                           firing_rate=0.0, in_size=n_src, out_size=n_pop, weights=n_src * n_pop,
                           out_channels=n_pop, in_events=float(n_src), source=src)
    m = Loihi()
    m.price([lay("a", 2048, "b", 10)])    # a on cores 0-1, b on core 2 (same mesh row)
    assert m.placement == {"a": [(0, 1024), (1, 1024)], "b": [(2, 10)]}
    assert m.route_pj("a", "b") == pytest.approx(0.5 * (1.7 + 2 * 3.0) + 0.5 * (1.7 + 1 * 3.0))
    m.price([lay("a", 8 * 1024, "b", 10)])   # a fills row 0, b starts row 1 at column 0
    assert m.route_pj("a", "b") == pytest.approx(1.7 + 3.5 * 3.0 + 4.0)


def test_cli_several_energy_models_compare_figure_and_errors(rng, tmp_path):
    from click.testing import CliRunner

    from snncc.cli import main
    from snncc.ir import serialize

    def invoke(*args):
        return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])
    serialize.save(mlp(rng), tmp_path / "m.snn.onnx")
    res = invoke("energy", "report", tmp_path / "m.snn.onnx", "--dataset", "digits", "--limit", 20,
                 "--backend", "torch",
                 "--energy-model", "kundu", "--energy-model", "lemaire", "--energy-model", "loihi", "--compare",
                 "--png", tmp_path / "e.png", "--json", tmp_path / "e.json")
    assert res.exit_code == 0, res.stderr
    models = json.loads((tmp_path / "e.json").read_text())["models"]
    assert [m["energy_model"] for m in models] == ["kundu", "lemaire", "loihi"]
    assert set(models[1]["breakdown"]) == {"compute", "memory", "addressing", "neuron updates"}
    assert "routing" in models[2]["breakdown"] and models[2]["constants"]["E_SYNOP"]["pj"] == 23.6
    assert all(m["conventions"]["graded"] == "events" and m["breakeven_rate"] is not None for m in models)
    assert models[1]["layers"][1]["breakeven_rate"] is not None and models[0]["layers"][0]["breakeven_rate"] is None
    assert "Energy per inference, side by side" in res.stdout and "pre-silicon" in res.stdout
    assert (tmp_path / "e.png").stat().st_size > 10_000
    (tmp_path / "bad.toml").write_text("base = 'kundu'\n[constants.E_AC]\npj = 'x'\nsource = 's'\ngrade = 'g'\n")
    for bad, msg in ((tmp_path / "bad.toml", "constants.E_AC.pj"), ("nosuch", "unknown energy model")):
        res = invoke("energy", "report", tmp_path / "m.snn.onnx", "--dataset", "digits", "--energy-model", bad,
                     "--json", tmp_path / "new.json")
        assert res.exit_code == 2 and msg in res.stderr and len(res.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "new.json").exists()
