"""Per-channel input normalisation: the Input op's mean/std, its application by every backend,
export of InputNormalize, and the BSD CNN's use of it (App. E.2.2: "all images are normalized")."""
import numpy as np
import pytest
import torch
from torch import nn

import graphs
from snncc.backends import torch_ref as torch_backend
from snncc.export import ExportError, export
from snncc.ir.graph import SpikeGraph
from snncc.ir.ops import Input
from snncc.ir.serialize import from_onnx, to_onnx
from snncc.ir.types import GraphError
from snncc.neuron import NeuronParams
from snncc.runtime import check_input
from snncc.sims import numba_sim
from snncc.models.layers import InputNormalize, SpikingNeuron, TimeDistributed, channel_stats
from snncc.training.train import ConfigError, TrainConfig, build_model, load_checkpoint, train


def _normalised(graph: SpikeGraph, mean, std) -> SpikeGraph:
    """A copy of ``graph`` whose Input carries the normalisation."""
    g = from_onnx(to_onnx(graph))
    (inp,) = g.input_nodes
    op = g.op(inp)
    g.replace_op(inp, Input(op.shape, op.encoding, mean=np.asarray(mean, float), std=np.asarray(std, float)))
    return g


def test_present_formula_and_bound():
    op = Input((2, 1, 2), mean=np.array([0.5, -1.0]), std=np.array([0.25, 2.0]))
    x = np.arange(8, dtype=float).reshape(2, 2, 1, 2)
    want = x.copy()
    want[:, 0] = (x[:, 0] - 0.5) / 0.25
    want[:, 1] = (x[:, 1] + 1.0) / 2.0
    assert np.array_equal(op.present(x), want)
    # |x| <= 1: channel 0 reaches (0.5 + 1) / 0.25 = 6, channel 1 (1 + 1) / 2 = 1
    assert op.value_bound(1.0) == 6.0
    assert Input((3,)).present(x) is x and Input((3,)).value_bound(2.0) == 2.0


@pytest.mark.parametrize("kwargs, msg", [
    (dict(mean=np.zeros(1)), "both mean and std"),
    (dict(mean=np.zeros(2), std=np.ones(2)), r"shape \(1,\)"),
    (dict(mean=np.zeros(1), std=np.zeros(1)), "std > 0"),
    (dict(mean=np.array([np.nan]), std=np.ones(1)), "finite"),
    (dict(encoding="spike", mean=np.zeros(1), std=np.ones(1)), "spike-encoded"),
])
def test_bad_normalisation_is_refused(kwargs, msg):
    with pytest.raises(GraphError, match=msg):
        Input((1, 4, 4), **kwargs).infer("x", [])


def test_round_trip_is_exact():
    rng = np.random.default_rng(0)
    g = _normalised(graphs.cnn(rng), [0.1307], [0.3081])
    back = from_onnx(to_onnx(g))
    op = back.op(back.input_nodes[0])
    assert np.array_equal(op.mean, [0.1307]) and np.array_equal(op.std, [0.3081])


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_backends_apply_the_normalisation(backend):
    """A normalised graph on raw x == the plain graph on hand-normalised x, spike for spike."""
    rng = np.random.default_rng(3)
    plain = graphs.cnn(rng)
    mean, std = np.array([0.4]), np.array([0.2])
    norm = _normalised(plain, mean, std)
    x = rng.uniform(0, 1, (4, 1, 8, 8))
    run = torch_backend.run if backend == "torch" else numba_sim.run
    got = run(norm, x, 5, record=True)
    ref = run(plain, (x - 0.4) / 0.2, 5, record=True)
    unnormalised = run(plain, x, 5, record=True)
    for n in plain.populations():
        assert np.array_equal(got.trains[n], ref.trains[n]), n
    assert any(not np.array_equal(got.trains[n], unnormalised.trains[n]) for n in plain.populations())
    assert np.array_equal(check_input(norm, x, 5), (x - 0.4) / 0.2)


def _snn():
    lif = NeuronParams("lif", tau=2.0, v_th=0.5)
    torch.manual_seed(0)
    net = nn.Sequential(InputNormalize(2), TimeDistributed(nn.Conv2d(2, 4, 3, padding=1)),
                        SpikingNeuron(lif), TimeDistributed(nn.Flatten()), TimeDistributed(nn.Linear(64, 3)),
                        SpikingNeuron(lif))
    net[0].set_stats([0.3, 0.6], [0.2, 0.5])
    return net


def test_export_folds_normalisation_into_the_input():
    net = _snn()
    x = torch.rand(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    g = export(net, x.unsqueeze(0).repeat(4, 1, 1, 1, 1))
    op = g.op(g.input_nodes[0])
    assert np.allclose(op.mean, [0.3, 0.6]) and np.allclose(op.std, [0.2, 0.5])
    assert "InputNormalize" not in g.summary()
    with torch.no_grad():
        want = net(x.double().unsqueeze(0).repeat(4, 1, 1, 1, 1).float()).sum(0).numpy()
    got = torch_backend.run(g, x.numpy().astype(np.float64), 4).output
    assert np.array_equal(got, want)


def test_export_refuses_normalisation_inside_the_network():
    lif = NeuronParams("lif", tau=2.0, v_th=0.5)
    net = nn.Sequential(TimeDistributed(nn.Linear(4, 4)), SpikingNeuron(lif), InputNormalize(4, 1),
                        TimeDistributed(nn.Linear(4, 2)), SpikingNeuron(lif))
    with pytest.raises(ExportError, match="must come first"):
        export(net, torch.zeros(2, 1, 4))


def test_set_stats_validates():
    m = InputNormalize(2)
    with pytest.raises(ValueError, match="2 channels"):
        m.set_stats([0.0], [1.0])
    with pytest.raises(ValueError, match="std > 0"):
        m.set_stats([0.0, 0.0], [1.0, 0.0])


def test_channel_stats():
    x = np.random.default_rng(0).normal(size=(10, 3, 4, 4))
    mean, std = channel_stats(x)
    assert np.allclose(mean, x.transpose(1, 0, 2, 3).reshape(3, -1).mean(1))
    assert np.allclose(std, x.transpose(1, 0, 2, 3).reshape(3, -1).std(1))


def test_cnn_normalises_by_default_mlp_refuses():
    assert TrainConfig(model="cnn").resolved().normalize is True
    assert TrainConfig(model="mlp").resolved().normalize is False
    assert build_model(TrainConfig(model="cnn", width=0.125)).input_normalizer is not None
    assert build_model(TrainConfig(model="cnn", width=0.125, normalize=False)).input_normalizer is None
    with pytest.raises(ConfigError, match="cnn model only"):
        TrainConfig(model="mlp", normalize=True).validate()
    with pytest.raises(ConfigError, match="true or false"):
        TrainConfig(model="cnn", normalize="yes").validate()


def test_training_sets_train_statistics_and_export_carries_them(tmp_path):
    from snncc.cli.cmd_train import export_checkpoint
    from snncc.data.datasets import load_split
    cfg = TrainConfig(method="bsd", model="cnn", dataset="digits", width=0.125, epochs=1, batch_size=64,
                      train_samples=200, test_samples=50)
    train(cfg, tmp_path, progress=False, threads=1)
    model, back = load_checkpoint(tmp_path / "model.pt")
    assert back.normalize is True
    x_tr, _ = load_split("digits", "train", None, 200, 0)
    mean, std = channel_stats(x_tr)
    assert np.allclose(model.input_normalizer.mean.numpy(), mean, rtol=1e-6)
    assert np.allclose(model.input_normalizer.std.numpy(), std, rtol=1e-6)
    g = export_checkpoint(tmp_path / "model.pt")
    op = g.op(g.input_nodes[0])
    assert np.allclose(op.mean, mean, rtol=1e-6) and np.allclose(op.std, std, rtol=1e-6)
    # the exported graph sees what the model sees: first-layer spikes equal
    x_te, _ = load_split("digits", "test", None, 20, 0)
    ref = torch_backend.run(g, x_te, cfg.timesteps, record=True)
    with torch.no_grad():
        xs = torch.as_tensor(x_te, dtype=torch.float32).unsqueeze(0).repeat(cfg.timesteps, 1, 1, 1, 1)
        s1 = model.forward_path[:model.block_lengths[0]](xs).numpy()
    first = g.populations()[0]
    assert ref.trains[first].sum() > 0
    assert np.array_equal(ref.trains[first].reshape(s1.shape), s1)


def test_old_checkpoints_without_the_field_load_unnormalised(tmp_path):
    cfg = TrainConfig(method="bptt", model="cnn", dataset="digits", width=0.125, epochs=1, train_samples=64,
                      test_samples=32, normalize=False)
    train(cfg, tmp_path, progress=False, threads=1)
    ckpt = torch.load(tmp_path / "model.pt", weights_only=True)
    del ckpt["config"]["normalize"]
    torch.save(ckpt, tmp_path / "old.pt")
    model, back = load_checkpoint(tmp_path / "old.pt")
    assert back.normalize is False and model.input_normalizer is None


def test_lava_float_and_fixed_bounds_follow_the_normalisation():
    from lavatest import require_lava
    lb, lf = require_lava()
    rng = np.random.default_rng(5)
    g = _normalised(graphs.mlp(rng, sizes=(64, 24, 10)), [0.4], [0.3])
    x = rng.uniform(0, 1, (2, 1, 8, 8))
    ref = torch_backend.run(g, x, 5, record=True)
    got = lb.run(g, x, 5, record=True)
    for n in g.populations():
        assert ref.trains[n].sum() > 0
        assert np.array_equal(got.trains[n], ref.trains[n]), n
    # fixed point: the direct-input bias scales cover |(x - 0.4) / 0.3| <= (0.4 + 1) / 0.3 for |x| <= 1
    plain = from_onnx(to_onnx(g))
    (inp,) = plain.input_nodes
    plain.replace_op(inp, Input(plain.op(inp).shape))
    assert lf.lower_fixed(g).fixed.input_bound == 1.0
    fix_norm = lf.run_integer(g, x, 5, record=True)
    fix_hand = lf.run_integer(plain, (x - 0.4) / 0.3, 5, record=True, input_bound=(0.4 + 1) / 0.3)
    for n in g.populations():
        assert np.array_equal(fix_norm.trains[n], fix_hand.trains[n]), n


def test_cli_normalize_flags(tmp_path):
    import json

    from click.testing import CliRunner

    from snncc.cli import main
    runner = CliRunner()
    res = runner.invoke(main, ["train", "--method", "bptt", "--model", "cnn", "--dataset", "digits", "--width",
                               "0.125", "--epochs", "1", "--train-samples", "64", "--test-samples", "32",
                               "--no-normalize", "--quiet", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["config"]["normalize"] is False
    res = runner.invoke(main, ["train", "--method", "bsd", "--dataset", "digits", "--normalize",
                               "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "cnn model only" in res.output
    assert not (tmp_path / "bad").exists()
