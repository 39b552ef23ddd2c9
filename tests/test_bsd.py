"""Tests for BSD / BPTT training: eq. 17 against autograd, locality (C2), weight
independence (C1), binary spikes (C4), short real runs, checkpoints, config errors
and divergence handling."""
import math

import pytest
import torch

from snncc.data.datasets import load_split
from snncc.neuron import NeuronParams
from snncc.training import train as train_mod
from snncc.models.mlp import BPTTMLP, BSDMLP
from snncc.training.methods.bsd import (cosine_predict, interlayer_loss, reco_grad_closed_form, reco_loss,
                                repeat_time, top_loss)
from snncc.models.layers import SpikingNeuron
from snncc.training.train import (CheckpointError, ConfigError, TrainConfig, TrainingDiverged, build_model,
                                  load_checkpoint, train, train_step)

SMALL = (64, 32, 24, 10)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is fastest on a busy box


def _digits_batch(n=48, seed=0):
    x, y = load_split("digits", "train", limit=n, seed=seed)
    return torch.from_numpy(x), torch.from_numpy(y)


def _strip_seconds(metrics):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in metrics["history"]]


# ---------------------------------------------------------------- ReCo and eq. 17
@pytest.mark.parametrize("shape", [(), (3,)], ids=["per-step", "time-flattened"])
@pytest.mark.parametrize("lam", [0.0, 0.6, 2.0])
def test_reco_gradient_matches_eq17(shape, lam):
    g = torch.Generator().manual_seed(1)
    b, n, d = 7, 11, 5
    s_prev = (torch.rand(*shape, b, n, generator=g, dtype=torch.float64) < 0.5).double()
    s_prev[..., 0] = 1.0  # no all-zero input row, so every norm is positive
    w = torch.randn(d, n, generator=g, dtype=torch.float64, requires_grad=True)
    v_hat = torch.randn(*shape, b, d, generator=g, dtype=torch.float64)
    v = s_prev @ w.T
    flat = (lambda t: t.transpose(0, 1).reshape(b, -1)) if shape else (lambda t: t)
    reco_loss(flat(v), flat(v_hat), lam).backward()
    closed = reco_grad_closed_form(v.detach(), v_hat, s_prev, lam)
    assert torch.allclose(w.grad, closed, rtol=1e-10, atol=1e-12)


def test_reco_loss_values():
    v = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert reco_loss(v, v.clone(), 0.6).item() == pytest.approx(0.0)  # aligned, orthogonal negatives
    swapped = v.flip(0)  # C = [[0, 1], [1, 0]]: diagonal misses (2 * 1) + lam * 2 positive off-diagonals
    assert reco_loss(v, swapped, 0.5).item() == pytest.approx(2.0 + 0.5 * 2.0)
    assert reco_loss(v, -swapped, 0.5).item() == pytest.approx(2.0)  # negative correlations are free


@pytest.mark.parametrize("m,lam", [(1, 0.6), (11, 0.6), (11, 0.3), (3, 1.0)])
def test_reco_with_shared_label_targets_settles_at_one_over_one_plus_lam_m(m, lam):
    """Classification BSD: samples of one label share one apical target, so eq. 7 also penalises
    cos(v_k, v_hat_j) = C_kk for the m other same-label samples j. Sample k's loss is then
    (1 - c)^2 + lam * m * c^2 (c = C_kk), minimised at c = 1 / (1 + lam * m), the level measured in
    trained MNIST MLPs (~0.1 for batch 128, docs/methods.md)."""
    target = torch.tensor([1.0, 0.0, 0.0])
    cs = torch.linspace(-0.2, 1.0, 1201, dtype=torch.float64)
    losses = []
    for c in cs:
        v_k = torch.tensor([float(c), math.sqrt(max(0.0, 1 - float(c) ** 2)), 0.0], dtype=torch.float64)
        # m same-label samples orthogonal to everything (their own rows cost 1 each), plus sample k
        others = torch.zeros(m, 3, dtype=torch.float64)
        others[:, 2] = -1.0  # cos(others, target) = 0 and cos(others, v_k) = 0: no other terms
        v = torch.cat([v_k[None], others])
        v_hat = target.expand(m + 1, 3).double()
        loss = reco_loss(v, v_hat, lam)
        assert loss.item() == pytest.approx((1 - c.item()) ** 2 + lam * m * max(0.0, c.item()) ** 2 + m, abs=1e-9)
        losses.append(loss.item())
    best = cs[int(torch.tensor(losses).argmin())].item()
    assert best == pytest.approx(1 / (1 + lam * m), abs=1e-3)


def test_interlayer_losses_and_silent_layer():
    g = torch.Generator().manual_seed(0)
    v, v_hat = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    for name in ("reco", "mse", "infonce"):
        assert math.isfinite(interlayer_loss(name, v, v_hat).item())
    assert interlayer_loss("mse", v, v).item() == 0.0
    assert math.isfinite(reco_loss(torch.zeros(6, 4), v_hat, 0.6).item())  # silent layer: no NaN
    with pytest.raises(ValueError, match="unknown inter-layer loss 'l1'"):
        interlayer_loss("l1", v, v_hat)


def test_top_losses():
    """"ce" (eq. 9) ignores the common level of the top currents; "firing" is a logistic loss per class on the
    current minus the top neurons' firing level, which pushes the label's current up and every other one down."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)  # (T, B, C)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    neuron = NeuronParams("lif", tau=2.0, v_th=0.3)
    ce = top_loss("ce", v, y, neuron)
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(v.mean(0), y, reduction="sum").item())
    assert top_loss("ce", v + 5.0, y, neuron).item() == pytest.approx(ce.item())  # shift-invariant
    level = 0.3 / (1 - 0.5 ** 4)  # fires within T = 4 steps
    m = v.mean(0) - level
    onehot = torch.nn.functional.one_hot(y, 3).double()
    expected = -(onehot * torch.log(torch.sigmoid(m)) + (1 - onehot) * torch.log(1 - torch.sigmoid(m))).sum()
    assert top_loss("firing", v, y, neuron).item() == pytest.approx(expected.item(), rel=1e-12)
    assert top_loss("firing", v + 5.0, y, neuron).item() != pytest.approx(expected.item())  # not shift-invariant
    w = v.clone().requires_grad_(True)
    top_loss("firing", w, y, neuron).backward()
    grad = w.grad.sum(0)  # d loss / d mean current, times T
    assert (grad[torch.arange(6), y] < 0).all()  # raise the label's current
    assert (grad.masked_fill(onehot.bool(), 1.0) > 0).all()  # lower every other class
    with pytest.raises(ValueError, match="unknown top loss 'mse'"):
        top_loss("mse", v, y, neuron)


def test_firing_top_loss_keeps_the_spike_readout_one_hot(tmp_path):
    """With the top loss on the firing level, mostly the label's output neuron fires, so the spike-count
    readout sees a single winner (CE leaves the outputs' level free: tests/test_bsd.py::test_top_losses)."""
    cfg = TrainConfig(method="bsd", dataset="digits", epochs=12, top_loss="firing")
    metrics = train(cfg, tmp_path, progress=False)
    assert metrics["test_accuracy"] > 0.8  # 0.872 here (slow start: all outputs begin below the level)
    assert 0.05 < metrics["history"][-1]["firing_rates"]["s4"] < 0.15  # ~ one of 10 output neurons
    model, loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.top_loss == "firing" and model.top == "firing"
    with pytest.raises(ConfigError, match="top_loss 'firing' applies to --method bsd"):
        TrainConfig(method="bptt", top_loss="firing").validate()


def test_cosine_prediction_equals_argmax_for_one_hot_codes():
    counts = torch.tensor([[0.0, 3.0, 1.0], [4.0, 0.0, 4.0], [0.0, 0.0, 2.0]])
    assert cosine_predict(counts).tolist() == [1, 0, 2]


# ---------------------------------------------------------------- structure and criteria
def test_forward_path_structure_and_shapes():
    model = BSDMLP(SMALL, timesteps=3)
    kinds = [type(m).__name__ if type(m).__name__ != "TimeDistributed" else type(m.module).__name__
             for m in model.forward_path]
    assert kinds == ["Flatten", "SpikingNeuron"] + ["Linear", "SpikingNeuron"] * 3
    x, _ = _digits_batch(5)
    assert model(repeat_time(x, 3)).shape == (3, 5, 10)
    assert [m.params.v_th for m in model.forward_path if isinstance(m, SpikingNeuron)] == [0.2] * 4
    assert all(m.params.v_th == 0.1 for m in model.backward_neurons)


def test_weights_are_independent_tensors():
    model = BSDMLP(SMALL)
    layers = model.named_weight_layers()
    params = [p for _, layer in layers for p in layer.parameters()]
    assert len(params) == 6  # W1..W3 and Theta1..Theta3
    ptrs = [p.untyped_storage().data_ptr() for p in params]
    assert len(set(ptrs)) == len(ptrs)
    assert len({id(p) for p in params}) == len(params)
    assert {p.shape for p in params} >= {(32, 64), (64, 32)}  # W1 and Theta1 mirror each other


@pytest.mark.parametrize("method", ["bsd", "bptt"])
def test_spikes_are_binary_in_every_layer_during_training(method):
    torch.manual_seed(0)
    model = build_model(TrainConfig(method=method, sizes=SMALL, timesteps=3))
    assert isinstance(model, BSDMLP if method == "bsd" else BPTTMLP)
    seen = []
    for m in model.modules():
        if isinstance(m, SpikingNeuron):
            m.register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = _digits_batch()
    train_step(model, opt, x, y)
    expected = 4 + (3 if method == "bsd" else 0)  # Type 1 layers 1..4 (+ Type 2 layers 2..4)
    assert len(seen) == expected
    for out in seen:
        assert torch.equal(out, (out > 0.5).float()), "non-binary spike tensor"
    assert any(out.any() for out in seen)


# ---------------------------------------------------------------- short real runs
@pytest.fixture(scope="module")
def bsd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bsd")
    cfg = TrainConfig(method="bsd", dataset="digits", epochs=6, lr=5e-3)
    return cfg, out, train(cfg, out, progress=False)


def test_bsd_learns_digits_deterministically(bsd_run, tmp_path):
    cfg, out, metrics = bsd_run
    assert metrics["test_accuracy"] > 0.6
    assert len(metrics["history"]) == cfg.epochs
    assert set(metrics["history"][0]["firing_rates"]) == {"s1", "s2", "s3", "s4", "s'2", "s'3", "s'4"}
    again = train(cfg, tmp_path, progress=False)
    assert _strip_seconds(again) == _strip_seconds(metrics)
    assert (tmp_path / "metrics.json").is_file()


def test_bptt_learns_digits_deterministically(tmp_path):
    cfg = TrainConfig(method="bptt", dataset="digits", epochs=3, lr=3e-3)
    first = train(cfg, tmp_path / "a", progress=False)
    second = train(cfg, tmp_path / "b", progress=False)
    assert first["test_accuracy"] > 0.6
    assert _strip_seconds(first) == _strip_seconds(second)


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(bsd_run):
    cfg, out, metrics = bsd_run
    raw = torch.load(out / "model.pt", weights_only=True)
    assert raw["format"] == "snncc-checkpoint/1" and raw["epoch"] == cfg.epochs
    assert raw["config"] == cfg.resolved().to_dict() == metrics["config"]
    assert raw["config"]["sizes"] == [64, 256, 256, 10]  # dataset defaults are recorded explicitly
    model, loaded_cfg = load_checkpoint(out / "model.pt")
    assert loaded_cfg == cfg.resolved() and isinstance(model, BSDMLP)
    assert all(torch.equal(raw["state_dict"][k], v) for k, v in model.state_dict().items())
    x, y = load_split("digits", "test")
    acc = train_mod.evaluate(model, x, y)
    assert acc == pytest.approx(metrics["test_accuracy"])


def test_checkpoint_errors(bsd_run, tmp_path):
    _, out, _ = bsd_run
    data = (out / "model.pt").read_bytes()
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
        load_checkpoint(tmp_path / "cut.pt")
    assert "\n" not in str(info.value)
    raw = torch.load(out / "model.pt", weights_only=True)
    torch.save(dict(raw, format="other/9"), tmp_path / "fmt.pt")
    with pytest.raises(CheckpointError, match="not an snncc checkpoint"):
        load_checkpoint(tmp_path / "fmt.pt")
    torch.save(dict(raw, config=dict(raw["config"], sizes=[64, 128, 10])), tmp_path / "misfit.pt")
    with pytest.raises(CheckpointError, match="does not fit its config"):
        load_checkpoint(tmp_path / "misfit.pt")
    torch.save(dict(raw, config=dict(raw["config"], lam=-1.0)), tmp_path / "badcfg.pt")
    with pytest.raises(CheckpointError, match="lam"):
        load_checkpoint(tmp_path / "badcfg.pt")


# ---------------------------------------------------------------- config errors
@pytest.mark.parametrize("change, match", [
    (dict(method="sgd"), "unknown method 'sgd'"),
    (dict(model="rnn"), "unknown model 'rnn'"),
    (dict(dataset="imagenet"), "unknown dataset 'imagenet'"),
    (dict(dataset="mnist", sizes=(64, 256, 10)), "do not fit mnist"),
    (dict(sizes=(64, 32, 100)), "do not fit digits"),
    (dict(lam=-0.1), "lam must be"),
    (dict(v_th=0.0), "v_th must be"),
    (dict(v_th_backward=-1.0), "v_th_backward must be"),
    (dict(epochs=0), "epochs must be"),
    (dict(timesteps=0), "timesteps must be"),
    (dict(lr=float("nan")), "lr must be"),
    (dict(interlayer_loss="l2"), "unknown interlayer_loss"),
    (dict(init_gain=0.0), "init_gain must be"),
])
def test_config_errors(change, match, tmp_path):
    cfg = TrainConfig(**change)
    with pytest.raises(ConfigError, match=match) as info:
        train(cfg, tmp_path, progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError):
        build_model(cfg)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- divergence
@pytest.mark.parametrize("method", ["bsd", "bptt"])
def test_nan_weight_raises_training_diverged_naming_the_layer(method):
    torch.manual_seed(0)
    model = build_model(TrainConfig(method=method, sizes=SMALL, timesteps=3))
    w1 = model.named_weight_layers()[0][1].weight
    with torch.no_grad():
        w1[0, 0] = float("nan")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = _digits_batch()
    with pytest.raises(TrainingDiverged, match=r"forward layer 2 \(W1\)") as info:
        train_step(model, opt, x, y)
    assert info.value.layer == "forward layer 2 (W1)"
    after = model.state_dict()  # no update was applied
    assert all(torch.equal(before[k].nan_to_num(), after[k].nan_to_num()) for k in before)


def test_divergence_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    original = train_mod._train_epoch

    def poisoned(model, optimizer, scheduler, data, cfg, epoch, bar):
        if epoch == 2:
            with torch.no_grad():
                model.theta[1].weight.fill_(float("inf"))
        return original(model, optimizer, scheduler, data, cfg, epoch, bar)

    monkeypatch.setattr(train_mod, "_train_epoch", poisoned)
    cfg = TrainConfig(epochs=3, train_samples=256, test_samples=64, sizes=SMALL)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 1: loss of backward layer 2 \(Theta2\)") as info:
        train(cfg, tmp_path, progress=False)
    assert "last good checkpoint" in str(info.value)
    model, _ = load_checkpoint(tmp_path / "model.pt")
    assert torch.isfinite(model.theta[1].weight).all()
    assert torch.load(tmp_path / "model.pt", weights_only=True)["epoch"] == 1


def test_bad_thread_count_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="threads must be"):
        train(TrainConfig(), tmp_path, progress=False, threads=0)


@pytest.mark.parametrize("model, extra", [("mlp", dict(sizes=SMALL)), ("cnn", dict(width=0.125))])
def test_init_gain_scales_every_weight_layer_and_nothing_else(model, extra):
    """--init-gain g: the default initialisation of every W and Theta times g (batch-norm parameters and the
    input statistics untouched), from the same seed."""
    torch.manual_seed(0)
    plain = build_model(TrainConfig(model=model, **extra)).state_dict()
    torch.manual_seed(0)
    woken = build_model(TrainConfig(model=model, init_gain=2.5, **extra))
    weights = {f"{n}.{k}" for n, layer in woken.named_modules() for k, p in layer.named_parameters(recurse=False)
               if p.dim() > 1}
    assert len(weights) >= 4
    for name, value in woken.state_dict().items():
        factor = 2.5 if name in weights else 1.0
        assert torch.equal(value, plain[name] * factor if factor != 1.0 else plain[name]), name
