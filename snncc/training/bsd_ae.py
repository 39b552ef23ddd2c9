"""BSD for a convolutional autoencoder (Sec. 4.4, App. E.2.4), with a BP-trained ReLU baseline.

Architecture (channels are multiplied by ``width``, each at least 1)::

    encoder: conv3x3/s2 C->128, conv3x3/s2 128->256, conv3x3/s2 256->512   (each + BN)
    decoder: [nearest-upsample, conv3x3/s1] 512->256, 256->128, 128->C      (each + BN)

Every stride-2 conv has padding 1, so a side n becomes ceil(n / 2):
28 -> 14 -> 7 -> 4 and 8 -> 4 -> 2 -> 1. Each upsampling returns exactly to the
size of the matching encoder map (``nn.Upsample(size=...)``): a plain x2 for the
8x8 digits (1 -> 2 -> 4 -> 8), and 4 -> 7 -> 14 -> 28 for 28x28 images (the one
4 -> 7 step is nearest resampling rather than an exact doubling).

Layers and the Type 1 / Type 2 pairing. The 6 convs define 7 neuron layers
(1-based, bottom to top) with shapes, for a C x H x W image and the encoder sizes
H -> H1 -> H2 -> H3::

    layer 1: (C,    H,  W )   the image        v_1  = x   (Type 1 basal input)
    layer 2: (128,  H1, W1)   after encoder conv 1
    layer 3: (256,  H2, W2)   after encoder conv 2
    layer 4: (512,  H3, W3)   bottleneck, after encoder conv 3
    layer 5: (256,  H2, W2)   after decoder block 1
    layer 6: (128,  H1, W1)   after decoder block 2
    layer 7: (C,    H,  W )   reconstruction     v'_7 = x   (Type 2 basal input)

The Type 1 (feedforward, bottom-up) path is the autoencoder itself: W_i maps
layer i to layer i+1, i.e. W_1..W_3 are the strided encoder convs and W_4..W_6
the upsample+conv decoder blocks. The Type 2 (backward, top-down) path has its
own weights Theta_i mapping layer i+1 back to layer i, built as the *inverse
spatial operation* of W_i ("where one path uses a strided convolution, the other
utilizes an upsampling layer, and vice versa"):

    Theta_6, Theta_5, Theta_4 (layer 7->6, 6->5, 5->4): conv3x3/s2 + BN  (W_4..W_6 upsample)
    Theta_3, Theta_2, Theta_1 (layer 4->3, 3->2, 2->1): upsample + conv3x3/s1 + BN  (W_1..W_3 stride)

so the Type 1 and Type 2 populations of every layer have identical (C, H, W)
(``layer_shapes`` / the tests check it). The source image x is the basal input of
both the bottom Type 1 neurons (v_1 = x, s_1 = SN(x)) and the top Type 2 neurons
(v'_7 = x, s'_7 = SN(x): the top Type 2 layer is a transducer turning the image
into spikes). Every conv, in both paths, reads binary spikes only (C4), and is
followed by batch normalisation as in the paper. Convs have no bias (BN has one).

Local losses (each trains one weight layer; inputs spikes and targets detached, C2):

* W_{i-1}, i = 2..6:   L_i  = FFT-ReCo(v_i,  sg(v'_i))   (basal v_i, apical target v'_i)
* W_6 (top, layer 7):  L_7  = MSE(mean_t v_7, x)         (top loss: basal vs apical v'_7 = x)
* Theta_i, i = 1..6:   L'_i = FFT-ReCo(v'_i, sg(v_i))    (Theta_1's target is v_1 = x)

where a layer's "voltage" v is its synaptic current (after BN), shaped
(T, B, C, H, W). FFT-ReCo (:func:`fft_reco_loss`) splits both voltages into a
low- and a high-frequency part with a centred circular mask of normalised radius
``freq_cutoff_ratio`` on the 2-D spectrum over (H, W), and sums ReCo on the low
parts (weight ``lam_low``) and ReCo on the high parts (``lam_high``); each part
is flattened per sample to T*C*H*W as in :mod:`snncc.training.bsd`.

Output. The reconstruction is the time-averaged top Type 1 voltage mean_t v_7
(BN in eval mode). Metrics: test MSE per pixel and PSNR = 10 log10(1 / MSE) of the
whole test set (pixels in [0, 1]), next to the mean-training-image baseline.
The paper reports FID; FID needs Inception-v3 weights, which are not available
offline here, so it is not computed.

Baseline (``method="bp"``, "ANN-BP" of Table 3): the Type 1 path with ReLU in place
of every spiking population (BN kept, the top layer linear), fed the analog image
once (no time steps), trained end to end by backprop on MSE(output, x).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snncc.data.datasets import DatasetError, batches, dataset_info, load_split
from snncc.fileio import atomic_path
from snncc.training.bsd import flatten_time, make_neuron, reco_loss, repeat_time
from snncc.training.checkpoint import FORMATS, CheckpointError, read_checkpoint
from snncc.training.config import ConfigError, check_choice, check_float, check_keys, check_run, fill, is_number
from snncc.training.layers import TimeDistributed
from snncc.training.loop import TrainingDiverged, deterministic, epoch_seed, fit, make_scheduler, step_on_losses
from snncc.training.recipes import DEFAULT_RECIPE, RECIPES, recipe_defaults

AE_CHECKPOINT_FORMAT = FORMATS["ae"]
AE_METHODS = ("bsd", "bp")
AE_DATASETS = ("digits", "mnist", "fashion-mnist")
ENCODER_CHANNELS = (128, 256, 512)


# ---------------------------------------------------------------- FFT band split
def frequency_mask(h: int, w: int, cutoff: float, device=None) -> torch.Tensor:
    """Boolean (H, W) low-frequency mask in *unshifted* FFT order.

    The mask is a disc centred at the zero frequency of the fftshift-ed spectrum:
    with centred coordinates u = (k - H//2) / (H/2) and v = (l - W//2) / (W/2), both
    in [-1, 1), bin (k, l) is low-frequency iff sqrt(u^2 + v^2) <= cutoff. It is
    returned ifftshift-ed to match ``torch.fft.fft2`` output. The disc is symmetric
    under k -> -k, so the low part of a real signal is real.
    """
    u = (torch.arange(h, device=device, dtype=torch.float64) - h // 2) / (h / 2)
    v = (torch.arange(w, device=device, dtype=torch.float64) - w // 2) / (w / 2)
    centred = (u[:, None] ** 2 + v[None, :] ** 2).sqrt() <= cutoff + 1e-12
    return torch.fft.ifftshift(centred)


def fft_split(x: torch.Tensor, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) spatial-domain parts of ``x`` (..., H, W); low + high == x.

    low = Re(ifft2(mask * fft2(x))), high = Re(ifft2((1 - mask) * fft2(x))).
    """
    h, w = x.shape[-2:]
    mask = frequency_mask(h, w, cutoff, x.device)
    spec = torch.fft.fft2(x)
    low = torch.fft.ifft2(spec * mask).real
    high = torch.fft.ifft2(spec * ~mask).real
    return low.to(x.dtype), high.to(x.dtype)


def fft_reco_loss(v: torch.Tensor, v_hat: torch.Tensor, cutoff: float, lam_low: float,
                  lam_high: float) -> torch.Tensor:
    """ReCo(low(v), low(v_hat), lam_low) + ReCo(high(v), high(v_hat), lam_high).

    ``v``/``v_hat`` are (T, B, C, H, W) currents (or (B, C, H, W)); each band is
    flattened per sample (T*C*H*W) before the cosine affinity. A band the mask
    leaves empty (e.g. the high band of a 1x1 map, or any cutoff >= sqrt(2))
    contributes 0 instead of ReCo's constant loss on all-zero vectors.
    """
    h, w = v.shape[-2:]
    mask = frequency_mask(h, w, cutoff)
    flat = flatten_time if v.dim() == 5 else (lambda t: t.reshape(t.shape[0], -1))
    v_lo, v_hi = fft_split(v, cutoff)
    t_lo, t_hi = fft_split(v_hat, cutoff)
    loss = v.new_zeros(())
    if bool(mask.any()):
        loss = loss + reco_loss(flat(v_lo), flat(t_lo), lam_low)
    if not bool(mask.all()):
        loss = loss + reco_loss(flat(v_hi), flat(t_hi), lam_high)
    return loss


def recon_mse(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over pixels, summed over the batch (the top loss)."""
    return F.mse_loss(out, x, reduction="none").flatten(1).mean(1).sum()


def psnr(mse: float, peak: float = 1.0) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


# ---------------------------------------------------------------- shapes
def ae_channels(width: float = 1.0, base=ENCODER_CHANNELS) -> list:
    return [max(1, int(round(c * width))) for c in base]


def ae_layer_shapes(input_shape, width: float = 1.0) -> list:
    """(C, H, W) of layers 1..7 (see the module docstring)."""
    c0, h, w = (int(n) for n in input_shape)
    ch = ae_channels(width)
    sizes = [(h, w)]
    for _ in ch:
        h, w = (h + 1) // 2, (w + 1) // 2  # conv3x3 / stride 2 / padding 1
        sizes.append((h, w))
    enc = [(c0, *sizes[0])] + [(c, *s) for c, s in zip(ch, sizes[1:])]
    return enc + enc[-2::-1][:-1] + [(c0, *sizes[0])]


def _strided(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out)]


def _upconv(c_in, c_out, size, bn=True):
    return [nn.Upsample(size=tuple(size), mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1, bias=not bn),
            *([nn.BatchNorm2d(c_out)] if bn else [])]


def _type1_synapses(shapes, top_bn: bool = False) -> list:
    """W_1..W_6 as plain nn.Sequential modules (layer i -> layer i+1).

    W_6 (the reconstruction layer) ends in BN only if ``top_bn``; otherwise its conv has a bias.
    """
    out = []
    for i in range(1, 7):
        (c_in, _, _), (c_out, h, w) = shapes[i - 1], shapes[i]
        mods = _strided(c_in, c_out) if i <= 3 else _upconv(c_in, c_out, (h, w), bn=(i < 6 or top_bn))
        out.append(nn.Sequential(*mods))
    return out


def _check_input_shape(input_shape) -> tuple:
    if len(input_shape) != 3:
        raise ValueError(f"the autoencoder needs (C, H, W) inputs, got shape {tuple(input_shape)}")
    return tuple(int(n) for n in input_shape)


# ---------------------------------------------------------------- models
class BSDAutoencoder(nn.Module):
    """Type 1 (W: the autoencoder) and Type 2 (Theta: inverse operations) spiking paths.

    See the module docstring for the exact layer pairing and losses.
    """

    def __init__(self, input_shape, width: float = 1.0, timesteps: int = 8, v_th: float = 0.4,
                 tau: float = 2.0, freq_cutoff_ratio: float = 0.6, lam_low: float = 0.005,
                 lam_high: float = 0.01, neuron_model: str = "lif", surrogate: str = "atan",
                 top_bn: bool = False):
        super().__init__()
        self.input_shape = _check_input_shape(input_shape)
        self.timesteps, self.width = int(timesteps), float(width)
        self.cutoff, self.lam_low, self.lam_high = float(freq_cutoff_ratio), float(lam_low), float(lam_high)
        self.shapes = ae_layer_shapes(self.input_shape, width)  # shapes[i - 1] = layer i
        neuron = lambda: make_neuron(v_th, tau, neuron_model, surrogate)  # noqa: E731
        # W[i - 1] = W_i: layer i -> i+1
        self.W = nn.ModuleList(TimeDistributed(m) for m in _type1_synapses(self.shapes, top_bn))
        theta = []
        for i in range(1, 7):  # Theta_i: layer i+1 -> layer i, the inverse spatial op of W_i
            (c_lo, h, w), (c_hi, _, _) = self.shapes[i - 1], self.shapes[i]
            theta.append(TimeDistributed(nn.Sequential(*(_upconv(c_hi, c_lo, (h, w)) if i <= 3
                                                          else _strided(c_hi, c_lo)))))
        self.theta = nn.ModuleList(theta)  # theta[i - 1] = Theta_i
        self.type1_neurons = nn.ModuleList(neuron() for _ in range(7))  # layers 1..7
        self.type2_neurons = nn.ModuleList(neuron() for _ in range(7))  # layers 1..7

    @property
    def num_layers(self) -> int:
        return 7

    def layer_shapes(self) -> list:
        return list(self.shapes)

    def named_weight_layers(self) -> list:
        fwd = [(f"forward layer {i + 1} (W{i})", self.W[i - 1]) for i in range(1, 7)]
        bwd = [(f"backward layer {i} (Theta{i})", self.theta[i - 1]) for i in range(1, 7)]
        return fwd + bwd

    def type1_pass(self, x_seq: torch.Tensor, detach: bool = True):
        """Currents v[1..7] and spikes s[1..7] of the Type 1 path (lists indexed by layer, [0] unused)."""
        v, s = [None, x_seq], [None, None]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            s[1] = self.type1_neurons[0](x_seq)
        for i in range(1, 7):
            inp = s[i].detach() if detach else s[i]
            v.append(self.W[i - 1](inp))
            with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):  # cut anyway (C2)
                s.append(self.type1_neurons[i](v[i + 1]))
        return v, s

    def type2_pass(self, x_seq: torch.Tensor):
        """Currents v'[1..7] and spikes s'[1..7] of the Type 2 path (v'_7 = x)."""
        vb, sb = [None] * 8, [None] * 8
        vb[7] = x_seq
        with torch.no_grad():
            sb[7] = self.type2_neurons[6](x_seq)
        for i in range(6, 0, -1):
            vb[i] = self.theta[i - 1](sb[i + 1].detach())
            with torch.no_grad():  # spikes only feed the next (detached) layer
                sb[i] = self.type2_neurons[i - 1](vb[i])
        return vb, sb

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> time-averaged top Type 1 voltage (B, C, H, W)."""
        v, _ = self.type1_pass(repeat_time(x, self.timesteps), detach=True)
        return v[7].mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    def _align(self, v, target):
        return fft_reco_loss(v, target.detach(), self.cutoff, self.lam_low, self.lam_high)

    def training_losses(self, x: torch.Tensor):
        """({weight layer name: local loss}, info) for a (B, C, H, W) batch of images."""
        x_seq = repeat_time(x, self.timesteps)
        v, s = self.type1_pass(x_seq, detach=True)
        vb, sb = self.type2_pass(x_seq)
        out = v[7].mean(0)
        losses = {f"forward layer {i} (W{i - 1})": self._align(v[i], vb[i]) for i in range(2, 7)}
        losses["forward layer 7 (W6)"] = recon_mse(out, x)
        for i in range(1, 7):
            losses[f"backward layer {i} (Theta{i})"] = self._align(vb[i], v[i])
        spikes = {f"s{i}": s[i] for i in range(1, 8)}
        spikes.update({f"s'{i}": sb[i] for i in range(1, 8)})
        own = {f"forward layer {i} (W{i - 1})": v[i] for i in range(2, 8)}
        own.update({f"backward layer {i} (Theta{i})": vb[i] for i in range(1, 7)})
        return losses, {"output": out, "spikes": spikes, "currents": own}


class BPAutoencoder(nn.Module):
    """The Type 1 path of :class:`BSDAutoencoder` with ReLU units, trained by backprop (ANN-BP)."""

    def __init__(self, input_shape, width: float = 1.0, top_bn: bool = False):
        super().__init__()
        self.input_shape = _check_input_shape(input_shape)
        self.width = float(width)
        self.shapes = ae_layer_shapes(self.input_shape, width)
        self.W = nn.ModuleList(_type1_synapses(self.shapes, top_bn))

    def layer_shapes(self) -> list:
        return list(self.shapes)

    def named_weight_layers(self) -> list:
        return [(f"forward layer {i + 1} (W{i})", self.W[i - 1]) for i in range(1, 7)]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, m in enumerate(self.W):
            h = m(h)
            if i < len(self.W) - 1:
                h = F.relu(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    def training_losses(self, x: torch.Tensor):
        out = self.reconstruct(x)
        return ({"output layer 7 (end-to-end MSE, ANN)": recon_mse(out, x)},
                {"output": out, "spikes": {}, "currents": {"forward layer 7 (W6)": out}})


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
        if self.method not in AE_METHODS:
            raise ConfigError(f"unknown method {self.method!r} (choose from {', '.join(AE_METHODS)})")
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
    if cfg.method == "bp":
        return BPAutoencoder(shape, cfg.width, cfg.top_bn)
    return BSDAutoencoder(shape, cfg.width, cfg.timesteps, cfg.v_th, cfg.tau, cfg.freq_cutoff_ratio,
                          cfg.lam_low, cfg.lam_high, top_bn=cfg.top_bn)


# ---------------------------------------------------------------- training
def ae_train_step(model, optimizer, x: torch.Tensor):
    """One pass, one backward of the summed local losses, one update -> (total, {name: loss}, info).
    No gradient clipping: App. E.2.4 states none."""
    model.train()
    losses, info = model.training_losses(x)
    total = step_on_losses(model, optimizer, losses, info["currents"], None)
    return total, {n: float(l.detach()) for n, l in losses.items()}, info


@torch.no_grad()
def evaluate_ae(model, x: np.ndarray, batch_size: int = 256) -> float:
    """Test MSE per pixel of ``model.reconstruct`` over images x (N, C, H, W) in [0, 1]."""
    model.eval()
    total = 0.0
    for xb, _ in batches(x, np.zeros(len(x), dtype=np.int64), batch_size):
        total += float(((model.reconstruct(xb) - xb) ** 2).sum())
    return total / x.size


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
                        loss, parts, info = ae_train_step(model, optimizer, xb)
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
