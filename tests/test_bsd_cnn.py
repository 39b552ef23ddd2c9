"""BSD-CNN (App. E.2.2), the BPTT CNN and the BP-on-ANN baseline: locality, binary spikes,
per-layer shapes, export (BN folded) and simulator agreement, a short real run, config errors."""
import numpy as np
import pytest
import torch

from snncc.backends import torch_ref as torch_backend
from snncc.data.datasets import load_split
from snncc.export import ExportError, export
from snncc.passes.validate import check_fully_spiking
from snncc.training.methods.bsd import repeat_time
from snncc.models.mlp import ANNMLP
from snncc.models.cnn import ANNCNN, BPTTCNN, BSDCNN, cnn_layer_shapes
from snncc.models.layers import SpikingNeuron
from snncc.training.train import (ConfigError, TrainConfig, build_model, load_checkpoint, train,
                                  train_step)
from snncc.sims import numba_sim

W = 0.125  # 16, 16, 32, 32, 64 channels


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is fastest on a busy box


def _digits(n=24, seed=0):
    x, y = load_split("digits", "train", limit=n, seed=seed)
    return torch.from_numpy(x), torch.from_numpy(y)


@pytest.mark.parametrize("shape, last", [((1, 28, 28), (64, 2, 2)), ((3, 32, 32), (64, 2, 2)),
                                         ((1, 8, 8), (64, 1, 1))])
def test_layer_shapes_for_28_32_and_8_pixel_inputs(shape, last):
    shapes, pooled = cnn_layer_shapes(shape, [16, 16, 32, 32, 64])
    assert shapes[0] == shape and shapes[-1] == last and pooled == (1, 1)  # flatten = 64 = 512 * W


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8)])
def test_type1_and_type2_layers_have_the_same_shape(shape):
    torch.manual_seed(0)
    model = BSDCNN(shape, 10, width=W / 2, timesteps=1)
    losses, info = model.training_losses(torch.rand(1, 2, *shape), torch.tensor([1, 7]))
    spikes, cur = info["spikes"], info["currents"]
    layers = model.layer_shapes()
    for i in range(2, model.num_layers):
        assert spikes[f"s{i}"].shape == spikes[f"s'{i}"].shape == (1, 2, *layers[i - 1])
        assert cur[f"forward layer {i} (W{i - 1})"].shape == cur[f"backward layer {i} (Theta{i})"].shape
    assert cur["backward layer 1 (Theta1)"].shape == (1, 2, *shape)  # reconstructs the input
    assert spikes["s7"].shape == (1, 2, 10)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize("method", ["bsd", "bptt"])
def test_spikes_are_binary_during_training(method):
    torch.manual_seed(0)
    model = build_model(TrainConfig(method=method, model="cnn", width=W, timesteps=2, v_th=0.5, v_th_backward=0.5))
    assert isinstance(model, BSDCNN if method == "bsd" else BPTTCNN)
    seen = []
    for m in model.modules():
        if isinstance(m, SpikingNeuron):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = _digits(16)
    train_step(model, opt, x, y)
    assert len(seen) == 6 + (5 if method == "bsd" else 0)
    for out in seen:
        assert torch.equal(out, (out > 0.5).float())
    assert any(out.any() for out in seen)


def _random_bn(model):
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.6 - 0.2)


def test_export_is_fully_spiking_and_simulators_agree_with_the_module():
    torch.manual_seed(0)
    t = 4
    model = BSDCNN((1, 8, 8), 10, width=W, timesteps=t, v_th=0.3)
    _random_bn(model)
    with torch.no_grad():
        model.forward_path[-2].module.weight.mul_(4.0)  # make the top layer fire
    graph = export(model.forward_path, torch.zeros(t, 1, 1, 8, 8), timesteps=t)
    report = check_fully_spiking(graph)
    assert report.fully_spiking, report.violations
    assert len(graph.populations()) == 6 and not any("BatchNorm" in n for n in graph.order())
    x, _ = _digits(12, seed=1)
    ref = torch_backend.run(graph, x.numpy(), t, record=True)
    sim = numba_sim.run(graph, x.numpy(), t, record=True)
    assert set(ref.trains) == set(sim.trains) == set(graph.populations())
    for name in ref.trains:
        np.testing.assert_array_equal(ref.trains[name], sim.trains[name])
    np.testing.assert_array_equal(ref.output, sim.output)
    # the training module (eval mode, BN not folded, float32) emits the same spikes
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(out.detach().numpy()))
             for m in model.forward_path if isinstance(m, SpikingNeuron)]
    model.eval()
    with torch.no_grad():
        model(repeat_time(x, t))
    for h in hooks:
        h.remove()
    assert ref.output.sum() > 0
    for mine, name in zip(seen, graph.populations()):
        agree = (mine.astype(np.uint8) == ref.trains[name]).mean()
        assert agree > 0.995, f"{name}: {agree}"  # float32 vs float64 may flip a spike at threshold


def test_short_bsd_cnn_run_beats_chance_and_reloads(tmp_path):
    cfg = TrainConfig(method="bsd", model="cnn", dataset="digits", width=0.25, epochs=3, batch_size=64,
                      lr=5e-3, v_th=0.5, v_th_backward=0.5, train_samples=900, test_samples=300)
    metrics = train(cfg, tmp_path, progress=False)
    assert metrics["test_accuracy"] > 0.3  # chance is 0.1
    last = metrics["history"][-1]
    assert set(last["hamming"]) == {f"layer {i}" for i in range(2, 7)}
    assert set(last["alignment"]) == {f"W{i}" for i in range(1, 7)}
    assert all(0.0 <= v <= 1.0 for v in last["hamming"].values())
    assert metrics["config"]["model"] == "cnn" and metrics["config"]["warmup_steps"] == 100
    model, loaded = load_checkpoint(tmp_path / "model.pt")
    assert isinstance(model, BSDCNN) and loaded.width == 0.25
    from snncc.cli.cmd_train import export_checkpoint
    assert check_fully_spiking(export_checkpoint(tmp_path / "model.pt")).fully_spiking


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
def test_ann_baseline_trains_and_refuses_export(model_name, tmp_path):
    cfg = TrainConfig(method="ann", model=model_name, dataset="digits", width=W, epochs=3, lr=1e-2, batch_size=32,
                      train_samples=600, test_samples=200)
    metrics = train(cfg, tmp_path, progress=False)
    assert metrics["test_accuracy"] > 0.5
    model, _ = load_checkpoint(tmp_path / "model.pt")
    assert isinstance(model, ANNCNN if model_name == "cnn" else ANNMLP)
    assert not any(isinstance(m, SpikingNeuron) for m in model.modules())
    with pytest.raises(ExportError, match="BP-on-ANN baseline"):
        model.forward_path  # noqa: B018
    from snncc.cli.cmd_train import export_checkpoint
    with pytest.raises(ExportError, match="cannot be exported to a spike graph"):
        export_checkpoint(tmp_path / "model.pt")


@pytest.mark.parametrize("loss", ["mse", "infonce"])
def test_interlayer_ablations_reach_the_cnn(loss):
    torch.manual_seed(0)
    model = build_model(TrainConfig(model="cnn", width=W, timesteps=2, interlayer_loss=loss, lam=0.0))
    assert model.interlayer == loss and model.lam == 0.0
    x, y = _digits(8)
    losses, _ = model.training_losses(repeat_time(x, 2), y)
    assert all(torch.isfinite(v) for v in losses.values())


def test_top_loss_reaches_the_cnn():
    """--top-loss firing: the CNN's top loss is top_loss("firing") on its top current, anchored at the firing level
    of its top neurons (threshold 1.0: 1.0 / (1 - 2^-T) for LIF tau = 2)."""
    from snncc.training.methods.bsd import top_loss
    torch.manual_seed(0)
    model = build_model(TrainConfig(model="cnn", width=W, timesteps=2, top_loss="firing"))
    assert model.top == "firing"
    x, y = _digits(8)
    losses, info = model.training_losses(repeat_time(x, 2), y)
    name = f"forward layer {model.num_layers} (W{model.num_layers - 1})"
    level = model.forward_path[-1].params.firing_current(2)
    assert level == pytest.approx(1.0 / (1 - 0.5 ** 2))
    assert losses[name].item() == pytest.approx(top_loss("firing", info["currents"][name], y,
                                                         model.forward_path[-1].params).item())


@pytest.mark.parametrize("change, match", [
    (dict(model="cnn", sizes=(64, 10)), "sizes only apply to the mlp"),
    (dict(model="cnn", width=0.0), "width must be"),
    (dict(model="cnn", lam=-0.5), "lam must be"),
    (dict(model="cnn", v_th=-1.0), "v_th must be"),
    (dict(model="cnn", v_th_backward=0.0), "v_th_backward must be"),
    (dict(model="cnn", warmup_steps=-1), "warmup_steps must be"),
    (dict(method="ann", lam=float("nan")), "lam must be"),
    (dict(model="rnn"), "unknown model 'rnn'"),
])
def test_config_errors(change, match):
    with pytest.raises(ConfigError, match=match):
        build_model(TrainConfig(**change))


def test_model_defaults_are_resolved():
    cnn = TrainConfig(model="cnn").resolved()
    assert (cnn.v_th, cnn.v_th_backward, cnn.lr, cnn.warmup_steps, cnn.sizes) == (1.0, 1.0, 1e-3, 100, None)
    mlp = TrainConfig().resolved()
    assert (mlp.v_th, mlp.v_th_backward, mlp.lr, mlp.warmup_steps) == (0.2, 0.1, 5e-3, 0)
