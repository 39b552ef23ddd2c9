"""RandAugment (snncc.data.augment): every op against an independent expectation (closed
form, numpy or PIL), the policy's shape/range/determinism, and its wiring into training."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageOps

from snncc.cli import main as cli
from snncc.data import augment as A
from snncc.training import train as train_mod
from snncc.training.train import ConfigError, TrainConfig


def _u8_image(seed, shape=(2, 3, 9, 11)):
    """Random images whose values are exact 8-bit levels, as the datasets decode them."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).double() / 255.0


def _pil_apply(img, fn):
    """Apply a PIL ImageOps function to every (image, channel) of a [0, 1] batch."""
    out = np.empty(img.shape)
    for b in range(img.shape[0]):
        for c in range(img.shape[1]):
            u8 = np.round(img[b, c].numpy() * 255).astype(np.uint8)
            out[b, c] = np.asarray(fn(Image.fromarray(u8, mode="L")), dtype=np.float64) / 255.0
    return torch.from_numpy(out)


# ---------------------------------------------------------------- geometric ops
def test_identity_leaves_the_batch_unchanged():
    x = _u8_image(0)
    assert torch.equal(A.apply_op("identity", x, torch.zeros(2)), x)


@pytest.mark.parametrize("k, degrees", [(1, 90.0), (2, 180.0), (3, 270.0), (3, -90.0)])
def test_rotate_by_right_angles_is_rot90_on_square_images(k, degrees):
    x = _u8_image(1, (3, 2, 7, 7))
    assert torch.equal(A.rotate(x, degrees), torch.rot90(x, k, dims=(-2, -1)))
    even = _u8_image(2, (1, 1, 6, 6))
    assert torch.equal(A.rotate(even, degrees), torch.rot90(even, k, dims=(-2, -1)))


@pytest.mark.parametrize("dx, dy", [(2, 0), (-3, 0), (0, 1), (0, -2), (1, -1)])
def test_translate_shifts_pixels_and_fills_zero(dx, dy):
    x = _u8_image(3, (2, 1, 6, 8)) + 0.01  # no zero pixels, so the fill is visible
    out = A.translate(x, float(dx), float(dy))
    expected = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for yy in range(h):
        for xx in range(w):
            sy, sx = yy - dy, xx - dx
            if 0 <= sy < h and 0 <= sx < w:
                expected[..., yy, xx] = x[..., sy, sx]
    assert torch.equal(out, expected)


@pytest.mark.parametrize("m", [1.0, -1.0, 1.0 / 3.0, -0.25 + 1e-3])
def test_shear_maps_pixel_indices_with_nearest_sampling(m):
    x = _u8_image(4, (1, 2, 7, 9)) + 0.01
    h, w = x.shape[-2:]
    sx_out, sy_out = A.shear_x(x, m), A.shear_y(x, m)
    ex, ey = torch.zeros_like(x), torch.zeros_like(x)
    for yy in range(h):
        for xx in range(w):
            src = int(np.round(xx + m * yy))  # shear_x: in(x + m*y, y)
            if 0 <= src < w:
                ex[..., yy, xx] = x[..., yy, src]
            src = int(np.round(yy + m * xx))  # shear_y: in(x, y + m*x)
            if 0 <= src < h:
                ey[..., yy, xx] = x[..., src, xx]
    assert torch.equal(sx_out, ex) and torch.equal(sy_out, ey)


def test_small_rotation_keeps_the_centre_pixel_and_moves_mass_counter_clockwise():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0  # centre
    x[0, 0, 4, 8] = 0.5  # right of centre: counter-clockwise (y down) moves it up
    out = A.rotate(x, 30.0)
    assert out[0, 0, 4, 4] == 1.0
    hits = torch.nonzero(out[0, 0] == 0.5).tolist()  # nearest sampling may copy a pixel twice
    ey, ex = 4 - 4 * np.sin(np.pi / 6), 4 + 4 * np.cos(np.pi / 6)  # (2.0, 7.46)
    assert [2, 7] in hits and all(abs(yy - ey) <= 1 and abs(xx - ex) <= 1 for yy, xx in hits)


# ---------------------------------------------------------------- photometric ops
def test_brightness_contrast_color_blend_formulas():
    x = _u8_image(5)
    f = torch.tensor([0.4, 1.7], dtype=x.dtype)
    fv = f.view(-1, 1, 1, 1)
    xn = x.numpy()
    gray = 0.2989 * xn[:, 0] + 0.587 * xn[:, 1] + 0.114 * xn[:, 2]
    np.testing.assert_allclose(A.brightness(x, f), np.clip(fv.numpy() * xn, 0, 1), atol=1e-12)
    mean = gray.mean(axis=(1, 2)).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(A.contrast(x, f), np.clip(fv.numpy() * xn + (1 - fv.numpy()) * mean, 0, 1),
                               atol=1e-12)
    np.testing.assert_allclose(A.color(x, f), np.clip(fv.numpy() * xn + (1 - fv.numpy()) * gray[:, None], 0, 1),
                               atol=1e-12)
    g1 = x[:, :1]  # one channel: contrast blends with the image's own mean
    np.testing.assert_allclose(A.contrast(g1, 0.5), np.clip(0.5 * g1.numpy() + 0.5 * g1.numpy().mean(axis=(1, 2, 3),
                               keepdims=True), 0, 1), atol=1e-12)


def test_sharpness_blends_with_the_smoothing_kernel_inside_and_keeps_borders():
    x = _u8_image(6, (1, 1, 5, 6))
    out = A.sharpness(x, 0.0)  # factor 0: the degenerate (smoothed) image itself
    xn, ref = x[0, 0].numpy(), x[0, 0].numpy().copy()
    k = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13.0
    for i in range(1, 4):
        for j in range(1, 5):
            ref[i, j] = (xn[i - 1:i + 2, j - 1:j + 2] * k).sum()
    np.testing.assert_allclose(out[0, 0], ref, atol=1e-12)
    np.testing.assert_allclose(A.sharpness(x, 2.0)[0, 0], np.clip(2 * xn - ref, 0, 1), atol=1e-12)


@pytest.mark.parametrize("bits", [1, 4, 7, 8])
def test_posterize_equals_pil(bits):
    x = _u8_image(7)
    assert torch.allclose(A.posterize(x, float(bits)), _pil_apply(x, lambda im: ImageOps.posterize(im, bits)),
                          atol=1e-12)


@pytest.mark.parametrize("level", [0, 77, 128, 255])
def test_solarize_equals_pil(level):
    x = _u8_image(8)
    assert torch.allclose(A.solarize(x, level / 255.0), _pil_apply(x, lambda im: ImageOps.solarize(im, level)),
                          atol=1e-12)


def test_autocontrast_stretches_each_channel_and_leaves_flat_ones():
    x = _u8_image(9) * 0.5 + 0.2
    x[1, 2] = 0.3  # a flat channel is unchanged
    xn = x.numpy()
    lo, hi = xn.min(axis=(2, 3), keepdims=True), xn.max(axis=(2, 3), keepdims=True)
    ref = np.where(hi > lo, (xn - lo) / np.where(hi > lo, hi - lo, 1), xn)
    out = A.autocontrast(x)
    np.testing.assert_allclose(out, ref, atol=1e-12)
    assert torch.equal(out[1, 2], x[1, 2])
    # PIL maps to 8 bits with truncation: within one level of the exact stretch
    on_grid = A.to_uint8(x[:1]).double() / 255.0
    assert torch.allclose(A.autocontrast(on_grid), _pil_apply(on_grid, ImageOps.autocontrast), atol=1.0 / 255 + 1e-9)


def test_equalize_equals_pil_including_degenerate_histograms():
    x = _u8_image(10, (2, 3, 16, 16)) ** 2  # skewed histograms
    x = A.to_uint8(x).double() / 255.0
    x[0, 1] = 0.5  # a single grey level: unchanged
    x[1, 0, :8] = 0.0  # two levels
    x[1, 0, 8:] = 1.0
    assert torch.allclose(A.equalize(x), _pil_apply(x, ImageOps.equalize), atol=1e-12)


# ---------------------------------------------------------------- strengths and the policy
def test_strength_table_matches_torchvision_bins():
    assert A.op_strength("rotate", 9, 28, 28) == pytest.approx(9.0)
    assert A.op_strength("shear_x", 30, 28, 28) == pytest.approx(0.3)
    assert A.op_strength("translate_x", 9, 28, 28) == 3.0  # int(150/331 * 28 * 0.3) = int(3.81)
    assert A.op_strength("translate_y", 4, 32, 32) == 1.0
    assert A.op_strength("brightness", 10, 8, 8) == pytest.approx(0.3)
    assert [A.op_strength("posterize", m, 8, 8) for m in (0, 4, 9, 30)] == [8.0, 7.0, 7.0, 4.0]
    assert A.op_strength("solarize", 0, 8, 8) == 1.0 and A.op_strength("solarize", 30, 8, 8) == 0.0
    assert len(A.op_names(1)) == 13 and "color" not in A.op_names(1) and len(A.op_names(3)) == 14


@pytest.mark.parametrize("shape", [(16, 1, 28, 28), (8, 3, 32, 32)])
def test_policy_keeps_shape_and_range_and_is_seeded(shape):
    x = _u8_image(11, shape).float()
    ra = A.RandAugment(2, 9)
    out = ra(x, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.dtype == x.dtype and 0.0 <= out.min() and out.max() <= 1.0
    assert torch.equal(out, ra(x, torch.Generator().manual_seed(5)))  # same seed, same batch
    other = ra(x, torch.Generator().manual_seed(6))
    assert not torch.equal(out, other)
    changed = (out != x).flatten(1).any(1)
    assert 0 < int(changed.sum()) <= len(x)  # per-sample choices: some images change


def test_policy_applies_the_drawn_op_to_each_sample():
    x = _u8_image(12, (12, 1, 10, 10)).float()
    ra = A.RandAugment(1, 12)
    ((idx, sign),) = ra.choices(12, 1, torch.Generator().manual_seed(3))
    out = ra(x, torch.Generator().manual_seed(3))
    for k in range(12):
        op = A.op_names(1)[int(idx[k])]
        s = A.op_strength(op, 12, 10, 10) * (float(sign[k]) if op in A.SIGNED else 1.0)
        assert torch.equal(out[k:k + 1], A.apply_op(op, x[k:k + 1], torch.tensor([s]))), op


def test_policy_rejects_out_of_range_n_and_m():
    for n, m in [(0, 9), (11, 9), (2, -1), (2, 31), (2.0, 9)]:
        with pytest.raises(ValueError):
            A.RandAugment(n, m)


# ---------------------------------------------------------------- training wiring
def test_config_defaults_follow_the_paper_and_reject_bad_values():
    r = TrainConfig(dataset="mnist", recipe="paper").resolved()
    assert (r.augment, r.ra_n, r.ra_m, r.lr, r.reco_pairs) == ("randaugment", 2, 9, 1e-4, "all")
    r = TrainConfig(dataset="cifar10", model="cnn", recipe="paper").resolved()
    assert (r.augment, r.ra_n, r.ra_m) == ("randaugment", 2, 4)  # App. E.2.2: magnitude 4
    r = TrainConfig(dataset="digits", recipe="paper").resolved()
    assert (r.augment, r.ra_n, r.ra_m) == ("none", None, None)
    # the CPU recipe (default): no augmentation, ReCo with same-label positives; RandAugment on request
    r = TrainConfig(dataset="mnist").resolved()
    assert (r.recipe, r.augment, r.ra_n, r.lr, r.epochs, r.reco_pairs) == (
        "cpu", "none", None, 1e-3, 5, "same-label-positive")
    r = TrainConfig(dataset="mnist", augment="randaugment").resolved()
    assert (r.augment, r.ra_n, r.ra_m) == ("randaugment", 2, 9)
    assert TrainConfig(dataset="mnist", method="bptt").resolved().reco_pairs is None
    assert TrainConfig(dataset="mnist", interlayer_loss="infonce").resolved().reco_pairs is None
    assert TrainConfig(dataset="mnist", augment="none").resolved().ra_m is None
    assert TrainConfig(dataset="mnist", reco_pairs="all", reco_same_weight=0.3).resolved().reco_same_weight == 0.3
    assert TrainConfig(dataset="mnist", recipe="paper", reco_same_weight=0.0).resolved().reco_pairs == "all"
    for change, match in [(dict(augment="autoaugment"), "unknown augment 'autoaugment'"),
                          (dict(augment="randaugment", ra_n=0), "ra_n must be an integer in 1..10"),
                          (dict(augment="randaugment", ra_m=31), "ra_m must be an integer in 0..30"),
                          (dict(augment="randaugment", ra_m=2.5), "ra_m must be"),
                          (dict(dataset="mnist", augment="none", ra_m=3), "only apply with augment"),
                          (dict(method="bptt", reco_pairs="all"), "reco_pairs applies to --method bsd"),
                          (dict(interlayer_loss="mse", reco_pairs="distinct-labels"), "applies to the reco"),
                          (dict(reco_pairs="some"), "unknown reco_pairs"),
                          (dict(reco_same_weight=0.3), "pairs 'same-label-positive'"),  # the CPU recipe's pairs
                          (dict(reco_pairs="all", reco_same_weight=-1.0), "reco_same_weight must be"),
                          (dict(method="bptt", reco_same_weight=0.3), "applies to --method bsd")]:
        with pytest.raises(ConfigError, match=match):
            TrainConfig(**change).validate()


def test_training_augments_train_batches_only(tmp_path, monkeypatch):
    seen = {"train": [], "eval": []}
    step, evaluate = train_mod.train_step, train_mod.evaluate
    monkeypatch.setattr(train_mod, "train_step", lambda m, o, x, y, c: seen["train"].append(x.clone()) or step(m, o, x, y, c))
    monkeypatch.setattr(train_mod, "evaluate", lambda m, x, y, **kw: seen["eval"].append(x.copy()) or evaluate(m, x, y, **kw))
    cfg = TrainConfig(dataset="digits", epochs=1, train_samples=64, test_samples=32, batch_size=32, sizes=(64, 16, 10),
                      augment="randaugment", ra_n=2, ra_m=9)
    train_mod.train(cfg, tmp_path / "a", progress=False)
    plain = TrainConfig(**{**cfg.__dict__, "augment": "none", "ra_n": None, "ra_m": None})
    train_mod.train(plain, tmp_path / "b", progress=False)
    aug, raw = seen["train"][:2], seen["train"][2:]
    assert all(not torch.equal(a, r) for a, r in zip(aug, raw))  # same order, augmented pixels
    assert all(a.shape == r.shape for a, r in zip(aug, raw))
    assert np.array_equal(seen["eval"][0], seen["eval"][1])  # test data identical with and without
    again = []
    monkeypatch.setattr(train_mod, "train_step", lambda m, o, x, y, c: again.append(x.clone()) or step(m, o, x, y, c))
    train_mod.train(cfg, tmp_path / "c", progress=False)
    assert all(torch.equal(a, b) for a, b in zip(aug, again))  # reproducible for a fixed seed


def test_cli_train_with_randaugment(tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["train", "--method", "bsd", "--dataset", "digits", "--epochs", "1",
                                   "--train-samples", "96", "--test-samples", "40", "--sizes", "64,32,10",
                                   "--augment", "randaugment", "--ra-n", "1", "--ra-m", "4", "--threads", "1",
                                   "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    config = json.loads((out / "metrics.json").read_text())["config"]
    assert (config["augment"], config["ra_n"], config["ra_m"]) == ("randaugment", 1, 4)
    bad = CliRunner().invoke(cli, ["train", "--method", "bsd", "--dataset", "digits", "--augment", "mixup",
                                   "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "unknown augment 'mixup'" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
