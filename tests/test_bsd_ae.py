"""BSD autoencoder (Sec. 4.4, App. E.2.4) and its BP baseline: per-layer shapes of the two paths,
gradient locality, binary spikes, the FFT band split, a short real run on digits, config errors."""
import json

import numpy as np
import pytest
import torch

from snncc.data.datasets import load_split
from snncc.training.methods.bsd import reco_loss
from snncc.models.autoencoder import BPAutoencoder, BSDAutoencoder, ae_layer_shapes
from snncc.training.methods.bsd_fft import fft_reco_loss, fft_split, frequency_mask
from snncc.training.bsd_ae import AEConfig, load_ae_checkpoint, train_ae
from snncc.training.train import ConfigError

W = 1 / 32  # 4, 8, 16 channels


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: 1 thread is fastest on a busy box


def _digits(n=16):
    x, _ = load_split("digits", "train", limit=n, seed=0)
    return torch.from_numpy(x)


@pytest.mark.parametrize("shape, sizes", [((1, 8, 8), [8, 4, 2, 1, 2, 4, 8]),
                                          ((1, 28, 28), [28, 14, 7, 4, 7, 14, 28])])
def test_type1_and_type2_layer_shapes_match(shape, sizes):
    torch.manual_seed(0)
    model = BSDAutoencoder(shape, width=W, timesteps=2)
    expected = ae_layer_shapes(shape, W)
    assert [s[1] for s in expected] == sizes
    assert [s[0] for s in expected] == [1, 4, 8, 16, 8, 4, 1]
    x = torch.rand(3, *shape)
    with torch.no_grad():
        v, s = model.type1_pass(torch.stack([x, x]))
        vb, sb = model.type2_pass(torch.stack([x, x]))
    for i in range(1, 8):
        assert tuple(v[i].shape[2:]) == tuple(vb[i].shape[2:]) == expected[i - 1], i
        assert tuple(s[i].shape[2:]) == tuple(sb[i].shape[2:]) == expected[i - 1], i
    # strided conv in one path <-> upsampling in the other, for every weight layer
    for i in range(1, 7):
        w_ops = {type(m).__name__ for m in model.W[i - 1].module}
        t_ops = {type(m).__name__ for m in model.theta[i - 1].module}
        assert ("Upsample" in w_ops) != ("Upsample" in t_ops), i
    assert BPAutoencoder(shape, W)(x).shape == x.shape


def test_all_neurons_exchange_binary_spikes():
    torch.manual_seed(0)
    model = BSDAutoencoder((1, 8, 8), width=W, timesteps=4).train()
    seen = []

    def check(mod, args):
        seen.append(mod)
        vals = torch.unique(args[0].detach())
        assert set(vals.tolist()) <= {0.0, 1.0}, vals[:5]

    hooks = [m.register_forward_pre_hook(check) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    _, info = model.training_losses(_digits(8))
    for h in hooks:
        h.remove()
    assert len(seen) == 12  # every synapse of both paths read spikes
    assert len(info["spikes"]) == 14
    for name, s in info["spikes"].items():
        assert set(torch.unique(s).tolist()) <= {0.0, 1.0}, name
        if name not in ("s7", "s'1"):  # the two populations that feed no synapse may be silent
            assert s.any(), f"{name} is silent"


@pytest.mark.parametrize("h, w", [(8, 8), (7, 5), (28, 28)])
def test_fft_split_low_plus_high_is_the_signal(h, w):
    x = torch.randn(2, 3, 4, h, w, dtype=torch.float64)
    low, high = fft_split(x, 0.6)
    assert torch.allclose(low + high, x, atol=1e-10)
    # the low part is the inverse FFT of the masked spectrum (real: the mask is symmetric)
    mask = frequency_mask(h, w, 0.6)
    assert torch.allclose(torch.fft.fft2(low), torch.fft.fft2(x) * mask, atol=1e-9)
    assert mask[0, 0] and not mask.all()  # DC is low, the highest frequencies are not
    # a constant image has only a DC component
    lo, hi = fft_split(torch.full((h, w), 0.7, dtype=torch.float64), 0.6)
    assert torch.allclose(lo, torch.full((h, w), 0.7, dtype=torch.float64)) and hi.abs().max() < 1e-12


def test_fft_reco_with_all_frequencies_low_is_plain_reco():
    torch.manual_seed(0)
    v, t = torch.randn(3, 5, 2, 8, 8), torch.randn(3, 5, 2, 8, 8)
    flat = lambda a: a.transpose(0, 1).reshape(5, -1)  # noqa: E731
    assert frequency_mask(8, 8, 1.5).all()
    got = fft_reco_loss(v, t, 1.5, 0.3, 0.3)
    assert torch.allclose(got, reco_loss(flat(v), flat(t), 0.3), atol=1e-5)
    # with a real cutoff both bands count, each with its own lambda
    lo_v, hi_v = fft_split(v, 0.6)
    lo_t, hi_t = fft_split(t, 0.6)
    split = fft_reco_loss(v, t, 0.6, 0.005, 0.01)
    ref = reco_loss(flat(lo_v), flat(lo_t), 0.005) + reco_loss(flat(hi_v), flat(hi_t), 0.01)
    assert torch.allclose(split, ref, atol=1e-5)
    # a 1x1 map has only DC: the empty high band adds nothing
    v1, t1 = torch.randn(2, 5, 4, 1, 1), torch.randn(2, 5, 4, 1, 1)
    assert torch.allclose(fft_reco_loss(v1, t1, 0.6, 0.1, 0.9), reco_loss(flat(v1), flat(t1), 0.1), atol=1e-5)


def test_short_digits_run_learns_and_writes_outputs(tmp_path):
    cfg = AEConfig(dataset="digits", epochs=3, width=W, lr=5e-3, train_samples=400, test_samples=100)
    bsd = train_ae(cfg, tmp_path / "bsd", progress=False, threads=1)
    hist = bsd["history"]
    assert len(hist) == 3 and all(np.isfinite(h["test_mse"]) for h in hist)
    # the summed local losses fall; see the report for the reconstruction MSE vs the mean image
    assert hist[-1]["train_loss"] < 0.8 * hist[0]["train_loss"]
    for name in ("model.pt", "metrics.json", "reconstructions.png"):
        assert (tmp_path / "bsd" / name).is_file()
    assert (tmp_path / "bsd" / "reconstructions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "bsd" / "metrics.json").read_text())
    assert saved["test_mse"] == pytest.approx(hist[-1]["test_mse"]) and saved["test_psnr"] > 0
    model, cfg2 = load_ae_checkpoint(tmp_path / "bsd" / "model.pt")  # weights_only load
    assert cfg2 == cfg.resolved() and isinstance(model, BSDAutoencoder)  # recipe values recorded

    bp = train_ae(AEConfig(method="bp", dataset="digits", epochs=4, width=W, lr=5e-3, train_samples=None,
                           test_samples=100), tmp_path / "bp", progress=False, threads=1)
    assert bp["test_mse"] < bp["mean_image_mse"]  # the BP baseline beats the mean image


@pytest.mark.parametrize("kw, match", [({"method": "bptt"}, "method"), ({"dataset": "cifar10"}, "dataset"),
                                       ({"freq_cutoff_ratio": 0}, "freq_cutoff_ratio"),
                                       ({"lam_high": -1.0}, "lam_high"), ({"epochs": 0}, "epochs"),
                                       ({"width": float("nan")}, "width"), ({"top_bn": "yes"}, "top_bn")])
def test_config_errors(kw, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        train_ae(AEConfig(**kw), tmp_path, progress=False)
