"""MSKD training (snncc.training.mskd): eq. 8-11 loss, KL direction / temperature, heads kept out
of the export, tiny MNIST runs of every method, checkpoints, resume and one-line errors."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from snncc.export import export
from snncc.passes.validate import check_fully_spiking
from snncc.training.mskd import (CHECKPOINT_FORMAT, METHODS, HeadPositionError, MSKDCheckpointError, MSKDConfig,
                                 MSKDConfigError,
                                 MSKDNet, TeacherError, TeacherNotFoundError, build_net, export_mskd_checkpoint,
                                 head_positions, kd_kl,
                                 load_mskd_checkpoint, load_teacher, mskd_loss, save_teacher_logits, train_mskd)
from snncc.training.train import ConfigError, TrainingDiverged


def _log_softmax(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _ce(z, y):
    return float(-_log_softmax(z)[np.arange(len(y)), y].mean())


def _kl(s, t, tau):  # KL(softmax(s/tau) || softmax(t/tau)), batch mean, no tau^2
    ls, lt = _log_softmax(np.asarray(s) / tau), _log_softmax(np.asarray(t) / tau)
    return float((np.exp(ls) * (ls - lt)).sum(1).mean())


# ---------------------------------------------------------------- losses
def test_kd_kl_direction_and_temperature():
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.2, 3.0]], dtype=torch.float64)
    t = torch.tensor([[0.0, 1.5, 0.0], [1.0, -2.0, 0.5]], dtype=torch.float64)
    tau = 3.0
    got = float(kd_kl(s, t, tau))
    assert got == pytest.approx(_kl(s, t, tau), rel=1e-12)  # student distribution first (eq. 9 as written)
    peaked, flat = torch.tensor([[6.0, 0.0, 0.0]]), torch.zeros(1, 3)  # KL is asymmetric here
    fwd = float(kd_kl(peaked, flat, 1.0))
    assert fwd == pytest.approx(_kl(peaked, flat, 1.0), rel=1e-5)
    assert abs(fwd - _kl(flat, peaked, 1.0)) > 0.5  # ... not the reverse KL(teacher || student)
    assert float(kd_kl(s, t, tau, "hinton")) == pytest.approx(tau ** 2 * got, rel=1e-12)  # tau^2: the named option
    assert float(kd_kl(s, s.clone(), tau)) == pytest.approx(0.0, abs=1e-12)
    # higher temperature -> softer distributions -> smaller KL (eq. 9 as written: no tau^2 factor)
    assert float(kd_kl(s, t, 10.0)) < got
    # the teacher gets no gradient
    s2, t2 = s.clone().requires_grad_(), t.clone().requires_grad_()
    kd_kl(s2, t2, tau).backward()
    assert t2.grad is None and s2.grad is not None


def test_loss_composition_matches_eq11_with_the_hinton_scaling():
    y = np.array([0, 2])
    final = np.array([[1.0, 0.5, -0.5], [0.0, 0.3, 1.2]])
    heads = [np.array([[0.2, 0.1, 0.0], [0.0, 0.0, 0.4]]), np.array([[2.0, -1.0, 0.0], [0.3, 0.9, -0.2]])]
    teacher = np.array([[3.0, 1.0, 0.0], [0.0, 0.5, 2.5]])
    recon = np.array([[0.1, 0.4], [0.9, 0.0]])
    target = np.array([[0.0, 0.5], [1.0, 0.2]])
    alpha, tau, beta, w_c, w_k = 0.3, 4.0, 0.7, [0.5, 2.0], [1.5, 0.25]

    l_c = _ce(final, y) + sum(w * _ce(h, y) for w, h in zip(w_c, heads))
    l_k = tau ** 2 * (_kl(final, teacher, tau) + sum(w * _kl(h, teacher, tau) for w, h in zip(w_k, heads)))
    l_r = float(((recon - target) ** 2).mean())
    expected = (1 - alpha) * l_c + alpha * l_k + beta * l_r

    T = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    total, parts = mskd_loss(T(final), [T(h) for h in heads], torch.tensor(y), T(teacher), T(recon), T(target),
                             alpha=alpha, temperature=tau, beta=beta, w_c=w_c, w_k=w_k, scaling="hinton",
                             recon_kind="mean")
    assert float(total) == pytest.approx(expected, rel=1e-12)
    assert parts["L_c"] == pytest.approx(l_c) and parts["L_k"] == pytest.approx(l_k)
    assert parts["L_r"] == pytest.approx(l_r)
    # no teacher, no heads, no reconstruction: plain CE on the final head (the 'direct' baseline)
    total, _ = mskd_loss(T(final), [], torch.tensor(y), alpha=alpha, temperature=tau, beta=beta)
    assert float(total) == pytest.approx(_ce(final, y), rel=1e-12)
    # vanilla KD: final head only
    total, _ = mskd_loss(T(final), [], torch.tensor(y), T(teacher), alpha=alpha, temperature=tau, beta=beta,
                         scaling="hinton")
    assert float(total) == pytest.approx((1 - alpha) * _ce(final, y) + alpha * tau ** 2 * _kl(final, teacher, tau))
    with pytest.raises(MSKDConfigError, match="2 auxiliary heads but 1 CE"):
        mskd_loss(T(final), [T(h) for h in heads], torch.tensor(y), w_c=[1.0])


def test_eq11_as_written_on_a_hand_computed_example():
    """Two samples, two classes, one auxiliary head, KD temperature 2, worked out by hand:
    student logits 0, 0 everywhere -> p = (1/2, 1/2) and CE = ln 2 per head and sample (label 0);
    teacher logits (2 ln 3, 0) -> softmax of (ln 3, 0) at T = 2 is q = (3/4, 1/4), so
    KL(p || q) = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln(4/3) per head and sample;
    reconstruction errors (T = 1): sample 1 (1, 2) -> ||.||^2 = 5, sample 2 (0, 1) -> 1, so L_r = (5 + 1) / 2 = 3.
    L = (1 - a)(2 ln 2) + a ln(4/3) + b 3 (eq. 11); hinton: L_k x T^2 = 4; mean L_r: (1 + 4 + 0 + 1) / 4 = 1.5."""
    zeros, y = torch.zeros(2, 2, dtype=torch.float64), torch.tensor([0, 0])
    teacher = torch.tensor([[2 * math.log(3), 0.0]] * 2, dtype=torch.float64)
    recon = torch.tensor([[[1.0, 2.0], [0.0, 1.0]]], dtype=torch.float64)  # (T=1, B=2, 2 pixels)
    target = torch.zeros_like(recon)
    a, b = 0.25, 0.1
    total, parts = mskd_loss(zeros, [zeros.clone()], y, teacher, recon, target, alpha=a, temperature=2.0, beta=b)
    assert parts["L_c"] == pytest.approx(2 * math.log(2), rel=1e-12)
    assert parts["L_k"] == pytest.approx(math.log(4 / 3), rel=1e-12)
    assert parts["L_r"] == pytest.approx(3.0, rel=1e-12)
    assert float(total) == pytest.approx((1 - a) * 2 * math.log(2) + a * math.log(4 / 3) + b * 3.0, rel=1e-12)
    total, parts = mskd_loss(zeros, [zeros.clone()], y, teacher, recon, target, alpha=a, temperature=2.0, beta=b,
                             scaling="hinton", recon_kind="mean")
    assert parts["L_k"] == pytest.approx(4 * math.log(4 / 3), rel=1e-12) and parts["L_r"] == pytest.approx(1.5)
    assert MSKDConfig().kd_scaling == "paper" and MSKDConfig(recipe="paper").resolved().recon_loss == "mean"


def test_configs_written_before_eq11_as_written_keep_their_loss():
    """Checkpoints from before issue 16 stored ``kd_temperature_squared`` (and averaged L_r over elements):
    they load with the same loss (hinton / paper scaling, element-mean L_r); older ones (tau / tau_m) too."""
    new = MSKDConfig().to_dict()
    base = {k: v for k, v in new.items() if k not in ("kd_scaling", "recon_loss")}
    for squared, scaling in ((True, "hinton"), (False, "paper")):
        cfg = MSKDConfig.from_dict({**base, "kd_temperature_squared": squared})
        assert (cfg.kd_scaling, cfg.recon_loss) == (scaling, "mean")
    oldest = {k: v for k, v in base.items() if k not in ("kd_temperature", "tau")} | {"tau": 4.0, "tau_m": 2.0}
    cfg = MSKDConfig.from_dict(oldest)
    assert (cfg.kd_temperature, cfg.tau, cfg.kd_scaling, cfg.recon_loss) == (4.0, 2.0, "hinton", "mean")


# ---------------------------------------------------------------- structure
def _cfg(**kw):
    base = dict(model="spike-resnet18", dataset="mnist", epochs=1, timesteps=2, train_samples=256,
                test_samples=128, batch_size=64, width=0.125)
    return MSKDConfig(**{**base, **kw})


def test_head_positions_and_errors():
    assert head_positions(_cfg(heads=3), 8) == [2, 4, 6]
    assert head_positions(_cfg(heads=3), 33) == [8, 17, 25]
    assert head_positions(_cfg(head_positions=(1, 8)), 8) == [1, 8]
    with pytest.raises(HeadPositionError, match=r"head position 9 is beyond the depth of spike-resnet18 "
                                                r"\(residual blocks are numbered 1..8\)"):
        build_net(_cfg(method="mskd", head_positions=(3, 9)))
    with pytest.raises(HeadPositionError, match="8 auxiliary heads do not fit"):
        build_net(_cfg(method="mskd", heads=8))
    with pytest.raises(ConfigError, match="unknown method"):  # MSKD config errors are ConfigErrors
        _cfg(method="bsd").validate()
    with pytest.raises(MSKDConfigError, match="needs a spiking model"):
        _cfg(method="mskd", model="resnet18").validate()


def test_heads_and_reconstruction_are_kept_out_of_the_export():
    torch.manual_seed(0)
    net = build_net(_cfg(method="mskd"))
    assert isinstance(net, MSKDNet) and len(net.heads) == 3 and net.recon is not None
    x = torch.rand(2, 1, 28, 28)
    logits, heads, recon, _ = net(net.student.encode(x))
    assert logits.shape == (2, 10) and [h.shape for h in heads] == [(2, 10)] * 3
    assert recon.shape == (2, 2, 1, 28, 28)
    g = export(net.student, torch.zeros(2, 1, 1, 28, 28))
    assert check_fully_spiking(g).fully_spiking
    student_synapses = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in net.student.modules())
    assert len(g.synapses()) == student_synapses
    assert sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) for m in net.modules()) > student_synapses
    assert not any(k in n for n in g.nodes() for k in ("heads", "recon", "adapter"))


# ---------------------------------------------------------------- runs
@pytest.fixture(scope="module")
def ann_teacher(tmp_path_factory, request):
    from conftest import SHARED_DATA
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip("shared MNIST not found")
    out = tmp_path_factory.mktemp("ann")
    metrics = train_mskd(_cfg(method="ann", data_dir=str(SHARED_DATA)), out, progress=False)
    return out / "model.pt", metrics, str(SHARED_DATA)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "ann"])
def test_tiny_run_each_method_writes_loadable_checkpoints(method, ann_teacher, tmp_path):
    teacher_path, ann_metrics, data_dir = ann_teacher
    assert ann_metrics["method"] == "ann" and 0.0 <= ann_metrics["test_accuracy"] <= 1.0
    cfg = _cfg(method=method, data_dir=data_dir, teacher=None if method == "direct" else str(teacher_path))
    metrics = train_mskd(cfg, tmp_path, progress=False)
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    h = metrics["history"][-1]
    assert math.isfinite(h["train_loss"]) and h["seconds_per_step"] > 0
    assert (h["loss_parts"]["L_k"] > 0) == (method != "direct")
    assert (h["loss_parts"]["L_r"] > 0) == (method == "mskd")
    raw = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["epoch"] == 1
    assert not any(k.startswith(("heads.", "recon.")) for k in raw["state_dict"])
    assert bool(raw["aux_state_dict"]) == method.startswith("mskd")
    student, loaded = load_mskd_checkpoint(tmp_path / "model.pt")
    assert loaded == cfg.resolved() and not student.training  # recipe values recorded
    g = export_mskd_checkpoint(tmp_path / "model.pt")
    assert g.metadata["timesteps"] == 2 and g.metadata["method"] == method
    assert check_fully_spiking(g).fully_spiking  # a Spike-ResNet student stays fully spiking
    if method == "kd":  # the cached teacher logits are a reusable teacher file
        logits = load_teacher(tmp_path / "teacher_logits.pt", cfg)
        assert logits.shape == (256, 10)


def test_ann_checkpoint_loads_as_ann(ann_teacher):
    model, cfg = load_mskd_checkpoint(ann_teacher[0])
    assert cfg.method == "ann" and model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(MSKDCheckpointError, match="not a spiking network"):
        export_mskd_checkpoint(ann_teacher[0])


def test_teacher_errors(ann_teacher, tmp_path):
    teacher_path, _, data_dir = ann_teacher
    with pytest.raises(TeacherNotFoundError, match="teacher file not found: .*nope.pt"):
        train_mskd(_cfg(method="kd", data_dir=data_dir, teacher=str(tmp_path / "nope.pt")), tmp_path, progress=False)
    wrong = nn.Sequential(nn.Flatten(), nn.Linear(784, 7))
    with pytest.raises(TeacherError, match="predicts 7 classes but the dataset has 10"):
        train_mskd(_cfg(method="mskd", data_dir=data_dir), tmp_path, progress=False, teacher=wrong)
    with pytest.raises(MSKDConfigError, match="needs a teacher"):
        train_mskd(_cfg(method="kd", data_dir=data_dir), tmp_path, progress=False)
    # precomputed logits are tied to the training subset they were computed on
    save_teacher_logits(teacher_path, _cfg(method="kd", data_dir=data_dir), tmp_path / "t.pt")
    with pytest.raises(TeacherError, match="not for this run's training data"):
        load_teacher(tmp_path / "t.pt", _cfg(method="kd", data_dir=data_dir, seed=1))
    assert not (tmp_path / "model.pt").exists()


def test_a_diverging_run_stops_with_one_line_naming_the_term(ann_teacher, tmp_path):
    """L_r as the paper's squared norm (x T*C*H*W the element mean) at the CPU recipe's SGD step blows the
    reconstruction up within the epoch: the run stops with TrainingDiverged (exit 2 in the CLI), no checkpoint."""
    _, _, data_dir = ann_teacher
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(TrainingDiverged, match=r"training diverged at epoch 1, step \d+: loss is not finite \(L_r; "
                                               r".*; no checkpoint written") as info:
        train_mskd(_cfg(method="mskd", data_dir=data_dir, recon_loss="sum"), tmp_path, progress=False, teacher=teacher)
    assert info.value.layer == "L_r" and "\n" not in str(info.value)
    assert not (tmp_path / "model.pt").exists()


def test_resume_continues_exactly(ann_teacher, tmp_path, monkeypatch):
    """A run that crashes in epoch 2 and is resumed ends with the same weights as an uninterrupted run."""
    from snncc.training import mskd as mskd_mod
    _, _, data_dir = ann_teacher
    cfg = _cfg(method="mskd", data_dir=data_dir, epochs=2, train_samples=128, teacher=None)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    full = train_mskd(cfg, tmp_path / "full", progress=False, teacher=teacher)

    real_step, calls = mskd_mod.train_step, []

    def crashing_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # 2 steps per epoch: crash in the first step of epoch 2
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(mskd_mod, "train_step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train_mskd(cfg, tmp_path / "part", progress=False, teacher=teacher)
    monkeypatch.setattr(mskd_mod, "train_step", real_step)
    assert torch.load(tmp_path / "part" / "model.pt", weights_only=True)["epoch"] == 1
    resumed = train_mskd(cfg, tmp_path / "part", progress=False, resume=True)  # teacher from its cache
    assert resumed["resumed_from_epoch"] == 1 and len(resumed["history"]) == 2
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "model.pt", weights_only=True)
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=0, atol=0, msg=k)
    assert resumed["test_accuracy"] == full["test_accuracy"]
    with pytest.raises(MSKDCheckpointError, match="cannot resume, config differs in lr"):
        train_mskd(_cfg(method="mskd", data_dir=data_dir, epochs=3, train_samples=128, lr=0.5),
                   tmp_path / "part", progress=False, resume=True, teacher=teacher)
