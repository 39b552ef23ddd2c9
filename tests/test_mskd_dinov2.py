"""DINOv2 teacher (snncc.training.dinov2): a tiny randomly initialised Dinov2 saved with
save_pretrained, loaded from its directory (no hub) through `snncc train --teacher dinov2:DIR`,
its features, the fitted linear probe (vs scikit-learn), a loaded classification head, the
cached logits an MSKD run uses, and one-line errors (exit code 2, nothing written)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

transformers = pytest.importorskip("transformers")
from transformers import Dinov2Config, Dinov2ForImageClassification, Dinov2Model  # noqa: E402

from snncc.cli import main  # noqa: E402
from snncc.data.datasets import load_split  # noqa: E402
from snncc.training.dinov2 import IMAGENET_MEAN, IMAGENET_STD, DinoV2Teacher  # noqa: E402
from snncc.training.mskd import (LOGITS_FORMAT, MSKDConfig, TeacherError, TeacherNotFoundError,  # noqa: E402
                                 load_teacher, teacher_logits_for)

N_TRAIN = 64


def _tiny(image_size=32, **kw):
    return Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, patch_size=4,
                        image_size=image_size, **kw)


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    """A bare DINOv2 backbone (no classification head): MSKD fits a linear probe."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dinov2") / "tiny"
    Dinov2Model(_tiny()).save_pretrained(path)
    return path


def _invoke(*args):
    return CliRunner(mix_stderr=False).invoke(main, [str(a) for a in args])


def _train_args(shared_data, out, teacher, method="mskd"):
    return ("train", "--method", method, "--model", "spike-resnet18", "--dataset", "mnist", "--data-dir",
            shared_data, "--train-samples", N_TRAIN, "--test-samples", 32, "--epochs", 1, "--timesteps", 1,
            "--width", 0.0625, "--batch-size", 32, "--teacher", teacher, "--out", out, "--quiet")


def _cfg(shared_data, **kw):
    return MSKDConfig(**{**dict(method="mskd", dataset="mnist", data_dir=str(shared_data), train_samples=N_TRAIN),
                         **kw})


def test_features_are_cls_and_mean_patch_of_the_resized_normalised_image(dino_dir, shared_data):
    teacher = load_teacher(f"dinov2:{dino_dir}", _cfg(shared_data))
    assert isinstance(teacher, DinoV2Teacher) and teacher.head is None and teacher.side == 32
    x = torch.from_numpy(load_split("mnist", "train", shared_data, 4, 0)[0])  # (4, 1, 28, 28)
    # by hand: grey -> RGB, 28 -> 32 px (a multiple of the 4-px patch), ImageNet normalisation
    pix = F.interpolate(x.repeat(1, 3, 1, 1), size=(32, 32), mode="bilinear", align_corners=False)
    pix = (pix - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    tokens = Dinov2Model.from_pretrained(dino_dir, local_files_only=True).eval()(pixel_values=pix).last_hidden_state
    assert tokens.shape == (4, 1 + 8 * 8, 32)
    want = torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], 1)
    torch.testing.assert_close(teacher.features(x), want, rtol=1e-5, atol=1e-5)
    # a plain directory path is a DINOv2 teacher too (the prefix only makes it explicit)
    assert isinstance(load_teacher(dino_dir, _cfg(shared_data)), DinoV2Teacher)


def test_preprocessor_config_sets_side_and_normalisation(tmp_path, shared_data):
    torch.manual_seed(1)
    Dinov2Model(_tiny(image_size=30)).save_pretrained(tmp_path)  # 30 is no multiple of 4 -> 28
    assert load_teacher(f"dinov2:{tmp_path}", _cfg(shared_data)).side == 28
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 18, "width": 18}, "image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    teacher = load_teacher(f"dinov2:{tmp_path}", _cfg(shared_data))
    assert teacher.side == 16  # rounded down to the patch grid
    x = torch.full((1, 1, 28, 28), 0.75)
    torch.testing.assert_close(teacher.preprocess(x), torch.ones(1, 3, 16, 16))  # (0.75 - 0.5) / 0.25


def test_probe_is_sklearns_logistic_regression(dino_dir, shared_data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    teacher = load_teacher(f"dinov2:{dino_dir}", _cfg(shared_data))
    x, y = load_split("mnist", "train", shared_data, 256, 0)
    feats = teacher.features(torch.from_numpy(x))
    acc = teacher.fit_probe(feats, torch.from_numpy(y), 10)
    z = StandardScaler().fit_transform(feats.double().numpy())
    ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(z, y)
    assert abs(acc - ref.score(z, y)) <= 2 / len(y) and acc > 0.2  # well above chance (0.1)
    ours, theirs = teacher.head(feats).double().numpy(), ref.decision_function(z)
    centred = lambda a: a - a.mean(1, keepdims=True)  # noqa: E731 -- softmax is shift-invariant per row
    np.testing.assert_allclose(centred(ours), centred(theirs), atol=1e-2 * np.abs(theirs).max())
    assert teacher.describe()["head"] == "probe"


def test_cli_mskd_run_with_dinov2_teacher_uses_its_cached_logits(dino_dir, shared_data, tmp_path):
    out = tmp_path / "run"
    res = _invoke(*_train_args(shared_data, out, f"dinov2:{dino_dir}"))
    assert res.exit_code == 0, res.stderr
    cache = torch.load(out / "teacher_logits.pt", weights_only=True)
    assert cache["format"] == LOGITS_FORMAT and cache["logits"].shape == (N_TRAIN, 10)
    assert cache["teacher"]["kind"] == "dinov2" and cache["teacher"]["head"] == "probe"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher"]["probe_train_accuracy"] == cache["teacher"]["probe_train_accuracy"] > 0.2
    assert metrics["history"][-1]["loss_parts"]["L_k"] > 0
    # the cache holds the teacher's logits on this run's training subset ...
    x, y = load_split("mnist", "train", shared_data, N_TRAIN, 0)
    again = teacher_logits_for(load_teacher(f"dinov2:{dino_dir}", _cfg(shared_data)), x, 10, y=y)
    torch.testing.assert_close(cache["logits"], again)
    # ... and they are what the run distilled from: the same run fed the cache file is identical
    res = _invoke(*_train_args(shared_data, tmp_path / "from_cache", out / "teacher_logits.pt"))
    assert res.exit_code == 0, res.stderr
    a = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "from_cache" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_loaded_classification_head_is_used_as_is(tmp_path, shared_data):
    torch.manual_seed(2)
    hf = Dinov2ForImageClassification(_tiny(image_size=28, num_labels=10)).eval()
    hf.save_pretrained(tmp_path)
    teacher = load_teacher(f"dinov2:{tmp_path}", _cfg(shared_data))
    assert teacher.describe()["head"] == "loaded" and teacher.side == 28
    x, y = load_split("mnist", "train", shared_data, 16, 0)
    logits = teacher_logits_for(teacher, x, 10)  # no labels needed: nothing is fitted
    with torch.no_grad():
        want = hf(pixel_values=teacher.preprocess(torch.from_numpy(x))).logits
    torch.testing.assert_close(logits, want, rtol=1e-5, atol=1e-5)
    assert teacher.probe_train_accuracy is None


def test_errors_are_one_line_and_write_nothing(tmp_path, shared_data):
    bare = tmp_path / "empty"
    bare.mkdir()
    wrong_classes = tmp_path / "seven"
    Dinov2ForImageClassification(_tiny(num_labels=7)).save_pretrained(wrong_classes)
    vit = tmp_path / "vit"
    vit.mkdir()
    (vit / "config.json").write_text(json.dumps({"model_type": "vit"}))
    no_weights = tmp_path / "no_weights"
    _tiny().save_pretrained(no_weights)  # config.json only
    cases = [(f"dinov2:{tmp_path / 'missing'}", "DINOv2 teacher directory not found"),
             (f"dinov2:{bare}", "has no config.json"),
             (f"dinov2:{wrong_classes}", "predicts 7 classes but the dataset has 10"),
             (f"dinov2:{vit}", "is a 'vit' model, not DINOv2"),
             (f"dinov2:{no_weights}", "cannot load the DINOv2 model"),
             (f"dinov2:{no_weights / 'config.json'}", "is not a directory")]
    for i, (spec, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        res = _invoke(*_train_args(shared_data, out, spec, method="kd"))
        assert res.exit_code == 2, (spec, res.stderr)
        assert res.stderr.startswith("error: ") and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
        assert not out.exists()  # nothing half-written
    with pytest.raises(TeacherNotFoundError):
        load_teacher(f"dinov2:{tmp_path / 'missing'}", _cfg(shared_data))
    headless = DinoV2Teacher(Dinov2Model(_tiny()), None, 32, IMAGENET_MEAN, IMAGENET_STD, "tiny")
    with pytest.raises(TeacherError, match="needs the training labels"):
        teacher_logits_for(headless, np.zeros((2, 1, 28, 28), np.float32), 10)
