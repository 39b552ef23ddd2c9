"""The (method, model) table: adding a training method touches one place (a registered TrainingMethod), and
pairs the table does not list are refused with one line naming the supported ones."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from snncc.cli import main
from snncc.data.datasets import load_split
from snncc.training import registry
from snncc.training.loop import make_optimizer, method_step
from snncc.training.methods.base import ModelKind, TrainingMethod, Variant
from snncc.training.train import TrainConfig, build_model, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")


class CountCE(TrainingMethod):
    """A toy method defined only here: cross-entropy on the top layer's spike counts, end to end through the
    surrogate gradient (not one of snncc's methods)."""

    name, variant = "count-ce", Variant.SPIKING

    def __init__(self):
        self.calls = []

    def losses(self, model, x, y, **context):
        self.calls.append(tuple(x.shape))
        currents, spikes = model.forward_layers(x)
        names = [name for name, _ in model.named_weight_layers()]
        top = spikes[f"s{len(names) + 1}"]
        return ({"count cross-entropy": F.cross_entropy(top.sum(0), y, reduction="sum")},
                {"output": top, "spikes": spikes, "currents": dict(zip(names, currents))})


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(registry, "TABLE", dict(registry.TABLE))  # the registration ends with the test
    return registry.register(CountCE(), ModelKind.MLP)


def _cfg(**kw):
    return TrainConfig(**{**dict(method="count-ce", dataset="digits", sizes=(64, 16, 10), timesteps=3, epochs=1,
                                 train_samples=32, test_samples=16, batch_size=32, lr=1e-2), **kw})


def test_a_method_registered_in_a_test_module_trains_one_step_through_the_real_loop(toy, tmp_path):
    cfg = _cfg()
    metrics = train(cfg, tmp_path, progress=False, threads=1)
    assert toy.calls == [(3, 32, 1, 8, 8)]  # one step of the whole 32-sample batch, presented over T = 3
    assert len(metrics["history"]) == 1 and metrics["config"]["method"] == "count-ce"
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]
    trained, saved = load_checkpoint(tmp_path / "model.pt")  # the checkpoint rebuilds through the registry
    assert saved.method == "count-ce" and type(trained).__name__ == "BPTTMLP"  # Variant.SPIKING of the mlp

    # oracle: the same step by hand (same initial weights and batch; the sum over samples is order-free)
    torch.manual_seed(cfg.seed)
    ref = build_model(cfg)
    assert ref.training_method is toy
    x, y = load_split("digits", "train", limit=32, seed=cfg.seed)
    opt = make_optimizer(ref, 1e-2, cfg.weight_decay)
    method_step(toy, ref, opt, torch.from_numpy(x).expand(3, *x.shape), torch.from_numpy(y), 0.3)
    changed = 0
    for (name, a), b in zip(trained.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        changed += not torch.equal(a, build_model(cfg).state_dict()[name])
    assert changed == 2  # both weight matrices moved


def test_unsupported_pairs_are_refused_naming_the_supported_ones(toy, tmp_path):
    with pytest.raises(registry.UnsupportedPair, match=r"unknown method 'count-ce' for model 'cnn' \(supported: .*"
                                                         r"count-ce on mlp"):
        _cfg(model="cnn", sizes=None).validate()
    with pytest.raises(registry.UnsupportedPair, match=r"unknown method 'nope' \(supported: ann on mlp, cnn, resnet;"):
        registry.lookup("nope", "mlp")
    with pytest.raises(ValueError, match="already registered"):
        registry.register(CountCE(), ModelKind.MLP)
    res = CliRunner(mix_stderr=False).invoke(main, ["train", "--method", "bptt", "--model", "spike-resnet18",
                                                    "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "unknown method 'bptt' for model 'resnet' (supported: " in res.stderr and "bptt on mlp, cnn" in res.stderr
    assert not (tmp_path / "r").exists()


def test_every_registered_pair_builds_its_variant():
    kinds = {(m, k): type(registry.lookup(m, k)).__name__ for (m, k) in registry.TABLE}
    assert kinds[("bsd", "mlp")] == "BSD" and kinds[("ann", "resnet")] == "ANNResNet"
    for method in ("bsd", "bptt", "ann"):
        model = build_model(TrainConfig(method=method, sizes=(64, 16, 10)))
        assert model.training_method is registry.lookup(method, "mlp")
        assert type(model).__name__ == {"bsd": "BSDMLP", "bptt": "BPTTMLP", "ann": "ANNMLP"}[method]
