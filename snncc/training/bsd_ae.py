"""Training the BSD convolutional autoencoder (Sec. 4.4, App. E.2.4) and its BP baseline.

The architectures (and the Type 1 / Type 2 pairing) are :mod:`snncc.models.autoencoder`; the FFT-ReCo
loss is :func:`snncc.training.methods.bsd.fft_reco_loss`. Output: the reconstruction is the time-averaged top
Type 1 voltage. Metrics: test MSE per pixel and PSNR = 10 log10(1 / MSE) of the whole test set (pixels
in [0, 1]), next to the mean-training-image baseline. The paper reports FID; FID needs Inception-v3
weights, which are not available offline here, so it is not computed.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snncc.models.autoencoder import BPAutoencoder, BSDAutoencoder
from snncc.data.datasets import DatasetError, batches, dataset_info, load_split
from snncc.fileio import atomic_path
from snncc.training.checkpoint import FORMATS, CheckpointError, read_checkpoint
from snncc.training.config import ConfigError, check_choice, check_float, check_keys, check_run, fill, is_number
from snncc.training.evaluation import ReconstructionError, evaluate
from snncc.training.loop import TrainingDiverged, deterministic, epoch_seed, fit, make_scheduler, step_on_losses
from snncc.training.registry import ModelKind, Variant, lookup
from snncc.training.recipes import DEFAULT_RECIPE, RECIPES, recipe_defaults

AE_CHECKPOINT_FORMAT = FORMATS["ae"]
AE_DATASETS = ("digits", "mnist", "fashion-mnist")


def psnr(mse: float, peak: float = 1.0) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


# ---------------------------------------------------------------- config
@dataclass
class AEConfig:
    """A BSD (or BP baseline) autoencoder run; MNIST defaults of App. E.2.4.

    ``width`` multiplies the channels (128, 256, 512); ``lam_low``/``lam_high`` are the
    ReCo lambdas of the low/high frequency bands split at ``freq_cutoff_ratio``.
    ``v_th``, ``tau``, ``timesteps`` and the lambdas only matter for ``method="bsd"``.
    """

    method: str = "bsd"
    dataset: str = "mnist"
    data_dir: str | None = None
    recipe: str = DEFAULT_RECIPE  # defaults of the None fields (snncc.training.recipes)
    epochs: int | None = None
    timesteps: int = 8
    width: float = 1.0
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.01
    v_th: float | None = None
    tau: float = 2.0
    freq_cutoff_ratio: float = 0.6
    lam_low: float = 0.005
    lam_high: float = 0.01
    train_samples: int | None = None
    test_samples: int | None = None
    seed: int = 0
    top_bn: bool = False

    def validate(self) -> "AEConfig":
        check_choice("recipe", self.recipe, RECIPES)
        lookup(self.method, ModelKind.AUTOENCODER)
        if self.dataset not in AE_DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r} for the autoencoder "
                              f"(choose from {', '.join(AE_DATASETS)})")
        check_run(self)
        for name in ("width", "lr", "v_th", "freq_cutoff_ratio"):
            if getattr(self, name) is not None:
                check_float(name, getattr(self, name), positive=True)
        for name in ("weight_decay", "lam_low", "lam_high"):
            check_float(name, getattr(self, name), positive=False)
        if not (is_number(self.tau) and math.isfinite(self.tau) and self.tau > 1):
            raise ConfigError(f"tau must be > 1 for LIF neurons, got {self.tau!r}")
        if not isinstance(self.top_bn, bool):
            raise ConfigError(f"top_bn must be true or false, got {self.top_bn!r}")
        if self.data_dir is not None and not isinstance(self.data_dir, (str, Path)):
            raise ConfigError(f"data_dir must be a path, got {self.data_dir!r}")
        return self

    def resolved(self) -> "AEConfig":
        """A validated copy with the recipe's values for the None fields."""
        self.validate()
        return replace(self, **fill(self, recipe_defaults(self.recipe, self.method, "autoencoder", self.dataset)))

    def to_dict(self) -> dict:
        d = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in asdict(self).items()}
        d["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        return d

    @classmethod
    def from_dict(cls, d) -> "AEConfig":
        check_keys(cls, d)
        return cls(**d).validate()


def build_ae(cfg: AEConfig) -> nn.Module:
    cfg = cfg.resolved()
    shape = dataset_info(cfg.dataset).input_shape
    if lookup(cfg.method, ModelKind.AUTOENCODER).variant is Variant.RELU:
        return BPAutoencoder(shape, cfg.width, cfg.top_bn)
    return BSDAutoencoder(shape, cfg.width, cfg.timesteps, cfg.v_th, cfg.tau, cfg.freq_cutoff_ratio,
                          cfg.lam_low, cfg.lam_high, top_bn=cfg.top_bn)


# ---------------------------------------------------------------- training
def ae_train_step(model, optimizer, x: torch.Tensor, method: str):
    """One pass of ``method`` (bsd or bp), one backward of the summed local losses, one update -> (total, {name: loss}, info).
    No gradient clipping: App. E.2.4 states none."""
    model.train()
    losses, info = lookup(method, ModelKind.AUTOENCODER).losses(model, x, None)
    total = step_on_losses(model, optimizer, losses, info["currents"], None)
    return total, {n: float(l.detach()) for n, l in losses.items()}, info


def evaluate_ae(model, x: np.ndarray, batch_size: int = 256) -> float:
    """Test MSE per pixel of ``model.reconstruct`` over images x (N, C, H, W) in [0, 1]."""
    images = (xb for xb, _ in batches(x, np.zeros(len(x), dtype=np.int64), batch_size))
    return evaluate(model, ((xb, xb) for xb in images), ReconstructionError())["test_mse"]


@torch.no_grad()
def reconstruct_images(model, x: np.ndarray) -> np.ndarray:
    model.eval()
    return model.reconstruct(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def save_reconstructions(path, originals: np.ndarray, recon: np.ndarray, title: str = "") -> Path:
    """Two-row PNG grid (originals on top, reconstructions below), written atomically.

    Uses matplotlib's Agg canvas through ``Figure`` directly (no pyplot / global backend).
    Reconstructions are clipped to [0, 1] for display only.
    """
    from matplotlib.figure import Figure

    n = len(originals)
    fig = Figure(figsize=(1.1 * n, 2.5))
    for row, (imgs, label) in enumerate(((originals, "original"), (np.clip(recon, 0.0, 1.0), "reconstruction"))):
        for k in range(n):
            ax = fig.add_subplot(2, n, row * n + k + 1)
            img = imgs[k]
            img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0:
                ax.set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return path


def train_ae(cfg: AEConfig, out_dir, progress: bool = True, threads: int | None = None,
             resume: bool = False) -> dict:
    """Train the BSD (or BP) autoencoder; after every epoch atomically rewrite
    out_dir/model.pt, out_dir/metrics.json and out_dir/reconstructions.png.
    ``resume=True`` continues from out_dir/model.pt (bit-identical to an uninterrupted run).

    Returns the metrics dict (``test_mse``, ``test_psnr``, ``mean_image_mse``,
    ``mean_image_psnr``, per-epoch ``history``). Raises ConfigError, DatasetError, CheckpointError
    or TrainingDiverged (the last completed epoch's files are left intact).
    """
    cfg = cfg.resolved()
    from tqdm import tqdm

    out = Path(out_dir)
    with deterministic(cfg.seed, threads):
        model = build_ae(cfg)
        x_tr, _ = load_split(cfg.dataset, "train", cfg.data_dir, cfg.train_samples, cfg.seed)
        x_te, _ = load_split(cfg.dataset, "test", cfg.data_dir, cfg.test_samples, cfg.seed)
        steps = cfg.epochs * math.ceil(len(x_tr) / cfg.batch_size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler, _ = make_scheduler(optimizer, steps, 0)
        mean_mse = float(((x_te - x_tr.mean(0, keepdims=True)) ** 2).mean())
        shown = x_te[:8]
        metrics = {"method": cfg.method, "dataset": cfg.dataset, "recipe": cfg.recipe, "test_mse": None,
                   "test_psnr": None, "mean_image_mse": mean_mse, "mean_image_psnr": psnr(mean_mse),
                   "fid": None, "fid_note": "FID needs Inception-v3 weights (not available offline)",
                   "layer_shapes": [list(s) for s in model.layer_shapes()],
                   "history": [], "config": cfg.to_dict()}
        dummy_y = np.zeros(len(x_tr), dtype=np.int64)
        with tqdm(total=steps, desc=f"ae {cfg.method} {cfg.dataset}", disable=not progress, unit="batch") as bar:
            def run_epoch(epoch):
                start = time.perf_counter()
                loss_sum, layer_sums, rate_sums, recon_sum = 0.0, {}, {}, 0.0
                order = batches(x_tr, dummy_y, cfg.batch_size, shuffle=True, seed=epoch_seed(cfg.seed, epoch, 7))
                for step, (xb, _) in enumerate(order):
                    try:
                        loss, parts, info = ae_train_step(model, optimizer, xb, cfg.method)
                    except TrainingDiverged as exc:
                        raise TrainingDiverged(f"epoch {epoch}, step {step + 1}: {exc}", exc.layer) from None
                    scheduler.step()
                    loss_sum += loss
                    recon_sum += float(((info["output"].detach() - xb) ** 2).sum())
                    for n, l in parts.items():
                        layer_sums[n] = layer_sums.get(n, 0.0) + l
                    for n, s in info["spikes"].items():
                        rate_sums[n] = rate_sums.get(n, 0.0) + float(s.detach().mean()) * len(xb)
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{loss / len(xb):.3f}", refresh=False)
                test_mse = evaluate_ae(model, x_te)
                n = len(x_tr)
                entry = {"epoch": epoch, "train_loss": loss_sum / n, "train_mse": recon_sum / x_tr.size,
                         "layer_losses": {k: v / n for k, v in layer_sums.items()},
                         "test_mse": test_mse, "test_psnr": psnr(test_mse), "seconds": time.perf_counter() - start}
                if rate_sums:
                    entry["firing_rates"] = {k: v / n for k, v in rate_sums.items()}
                bar.set_postfix(epoch=epoch, test_mse=f"{test_mse:.4f}")
                return entry

            def pictures(epoch, entry):
                save_reconstructions(out / "reconstructions.png", shown, reconstruct_images(model, shown),
                                     f"{cfg.method.upper()} {cfg.dataset}, epoch {epoch}: "
                                     f"test MSE {entry['test_mse']:.4f}, PSNR {entry['test_psnr']:.2f} dB")

            return fit(out, AE_CHECKPOINT_FORMAT, cfg.to_dict(), cfg.seed, cfg.epochs, model, optimizer, scheduler,
                       metrics, run_epoch, lambda e: {"test_mse": e["test_mse"], "test_psnr": e["test_psnr"]},
                       lambda: {"state_dict": model.state_dict()}, resume=resume, after_epoch=pictures)


def load_ae_checkpoint(path):
    """Rebuild the model saved by :func:`train_ae` -> (model in eval mode, AEConfig)."""
    path = Path(path)
    ckpt = read_checkpoint(path, AE_CHECKPOINT_FORMAT, "snncc autoencoder")
    try:
        cfg = AEConfig.from_dict(ckpt.get("config"))
        model = build_ae(cfg)
        model.load_state_dict(ckpt.get("state_dict"))
    except (ConfigError, DatasetError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: checkpoint does not fit its config ({exc})") from None
    return model.eval(), cfg


__all__ = ["AEConfig", "AE_CHECKPOINT_FORMAT", "BPAutoencoder", "BSDAutoencoder", "ae_layer_shapes",
           "build_ae", "evaluate_ae", "fft_reco_loss", "fft_split", "frequency_mask", "load_ae_checkpoint",
           "psnr", "save_reconstructions", "train_ae"]
