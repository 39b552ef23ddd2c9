"""Training driver for BSD / BPTT spiking MLPs and CNNs (and the BP-on-ANN baseline).

``train(cfg, out_dir)`` is the whole API the CLI needs. It is deterministic for a
given ``cfg.seed`` (weight init, data subset and per-epoch order all derive from
it), and after every epoch it atomically rewrites ``out_dir/model.pt`` and
``out_dir/metrics.json``, so a crash or a diverged run leaves the last good epoch.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from snncc.data.augment import DEFAULT_N as DEFAULT_RA_N
from snncc.data.augment import MAX_MAGNITUDE as RA_MAX_MAGNITUDE
from snncc.data.augment import MAX_OPS as RA_MAX_OPS
from snncc.data.augment import RandAugment
from snncc.data.datasets import DatasetError, batches, dataset_info, load_split
from snncc.fileio import atomic_path, write_json
from snncc.training.bptt import BPTTMLP
from snncc.training.bsd import INTERLAYER_LOSSES, TOP_LOSSES, BSDMLP, cosine_predict, firing_rates, repeat_time
from snncc.training.bsd_ann import ANNCNN, ANNMLP
from snncc.training.bsd_cnn import BPTTCNN, BSDCNN
from snncc.training.layers import channel_stats

CHECKPOINT_FORMAT = "snncc-checkpoint/1"
METHODS = ("bsd", "bptt", "ann")  # ann: BP on a ReLU network of the same architecture (not exportable)
MODELS = ("mlp", "cnn")
# App. E.2.1 layer sizes; digits is our small CPU demo (8x8 inputs).
DEFAULT_SIZES = {
    "digits": (64, 256, 256, 10),
    "mnist": (784, 1024, 1024, 512, 256, 10),
    "fashion-mnist": (784, 1024, 1024, 512, 256, 10),
    "cifar10": (3072, 4096, 2048, 1024, 512, 10),
    "cifar100": (3072, 4096, 2048, 1024, 512, 100),
}

# The paper uses 1e-4 (App. E.2.1) over long GPU runs; our short CPU runs need larger
# steps: 5e-3 trains digits in seconds, 1e-3 keeps the deep 28x28 MLPs stable.
DEFAULT_LR = {"digits": 5e-3}
FALLBACK_LR = 1e-3
# Per-model defaults for values left as None: (Type 1 threshold, Type 2 threshold, warm-up steps).
# MLP: App. E.2.1 (0.2 / 0.1, no warm-up); CNN: App. E.2.2 (1.0 / 1.0, 100 warm-up steps, lr 1e-3).
MODEL_DEFAULTS = {"mlp": (0.2, 0.1, 0), "cnn": (1.0, 1.0, 100)}
AUGMENTS = ("none", "randaugment")
# The paper applies RandAugment to every dataset it trains on (App. E.2.1 for the MLPs, E.2.2 for
# the CNNs); digits is our 8x8 demo set, not in the paper, and stays unaugmented by default.
AUGMENT_DEFAULTS = {"digits": "none"}
# RandAugment magnitude bin: App. E.2.2 gives 4 for the CNNs; App. E.2.1 gives none for the MLPs,
# which get RandAugment's (and torchvision's) default 9. N is never given: the default 2.
RA_MAGNITUDE = {"mlp": 9, "cnn": 4}


class ConfigError(ValueError):
    """A training configuration value is invalid (one-line message)."""


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not match its config."""


class TrainingDiverged(RuntimeError):
    """A loss or gradient became non-finite; ``layer`` names where."""

    def __init__(self, message: str, layer: str):
        super().__init__(message)
        self.layer = layer


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in checkpoints as a plain dict.

    ``sizes``, ``lr``, ``v_th``, ``v_th_backward`` and ``warmup_steps`` left as None
    take per-dataset / per-model defaults (``resolved()``).
    ``v_th``/``v_th_backward`` are the Type 1 / Type 2 thresholds (BPTT uses ``v_th``);
    ``lam``, ``interlayer_loss`` and ``temperature`` only matter for BSD.
    ``sizes`` is for the MLP only; ``width`` scales the CNN's channels (128, 128, 256,
    256, 512); ``warmup_steps`` of linear warm-up precede the cosine schedule (capped
    at a fifth of the run's steps, so short runs still reach the full rate).
    ``method="ann"`` trains the same architecture with ReLU units by backprop.
    ``normalize`` (CNN only) normalises the input per channel with the training split's
    mean and std, inside the model so it is part of the exported graph's Input; left as
    None it follows App. E.2.2 ("all images are normalized"): on for the CNN.
    ``augment="randaugment"`` applies RandAugment (snncc.data.augment) with ``ra_n``
    ops of magnitude ``ra_m`` to every training batch (never to test data); left as
    None it follows the paper: on for its datasets (App. E.2.1 / E.2.2), off for digits.
    """

    method: str = "bsd"
    model: str = "mlp"
    dataset: str = "digits"
    data_dir: str | None = None
    epochs: int = 30
    timesteps: int = 4
    train_samples: int | None = None
    test_samples: int | None = None
    seed: int = 0
    batch_size: int = 128
    lr: float | None = None  # None: DEFAULT_LR for the dataset
    sizes: tuple | None = None  # [n_1 (input), ..., n_L (classes)]; None: DEFAULT_SIZES
    v_th: float | None = None  # Type 1 (feedforward) threshold; None: MODEL_DEFAULTS
    v_th_backward: float | None = None  # Type 2 (backward) threshold (BSD only); None: MODEL_DEFAULTS
    tau: float = 2.0
    neuron: str = "lif"
    surrogate: str = "atan"
    lam: float = 0.6
    interlayer_loss: str = "reco"
    temperature: float = 0.1  # InfoNCE ablation only
    top_loss: str = "ce"  # BSD top layer: "ce" (eq. 9) or "firing" (snncc: per-class, vs the firing level)
    grad_clip: float | None = 0.3  # None: no clipping
    weight_decay: float = 0.01
    width: float = 1.0  # CNN channel multiplier (e.g. 0.125 for CPU runs)
    warmup_steps: int | None = None  # None: MODEL_DEFAULTS
    augment: str | None = None  # "randaugment" | "none"; None: AUGMENT_DEFAULTS (the paper's setting)
    ra_n: int | None = None  # RandAugment ops per image; None: 2
    ra_m: int | None = None  # RandAugment magnitude bin 0..30; None: RA_MAGNITUDE for the model
    normalize: bool | None = None  # per-channel input normalisation (CNN only); None: on for the CNN (App. E.2.2)

    def to_dict(self) -> dict:
        """Plain python values only, so checkpoints load with ``weights_only=True``."""
        d = {k: _plain(v) for k, v in asdict(self).items()}
        d["sizes"] = None if self.sizes is None else [int(n) for n in self.sizes]
        d["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        return d

    @classmethod
    def from_dict(cls, d) -> "TrainConfig":
        _check_keys(cls, d)
        cfg = cls(**d)
        if cfg.sizes is not None:
            cfg.sizes = tuple(cfg.sizes)
        return cfg

    def layer_sizes(self) -> list:
        """The full layer sizes [n_1, ..., n_L] (validates the config first)."""
        self.validate()
        return list(self.sizes) if self.sizes is not None else list(DEFAULT_SIZES[self.dataset])

    def resolved(self) -> "TrainConfig":
        """A validated copy with dataset defaults (sizes, lr) filled in, as recorded in outputs."""
        self.validate()
        th, th_b, warm = MODEL_DEFAULTS[self.model]
        lr = DEFAULT_LR.get(self.dataset, FALLBACK_LR) if self.model == "mlp" else FALLBACK_LR
        augment = self._augment()
        ra = augment == "randaugment"
        return replace(self, sizes=None if self.model != "mlp" else tuple(self.layer_sizes()),
                       augment=augment,
                       ra_n=(self.ra_n if self.ra_n is not None else DEFAULT_RA_N) if ra else None,
                       ra_m=(self.ra_m if self.ra_m is not None else RA_MAGNITUDE[self.model]) if ra else None,
                       normalize=(self.normalize if self.normalize is not None else self.model == "cnn"),
                       lr=self.lr if self.lr is not None else lr,
                       v_th=self.v_th if self.v_th is not None else th,
                       v_th_backward=self.v_th_backward if self.v_th_backward is not None else th_b,
                       warmup_steps=self.warmup_steps if self.warmup_steps is not None else warm)

    def _augment(self) -> str:
        """``augment``, or the paper's choice for the dataset when it is None."""
        return self.augment if self.augment is not None else AUGMENT_DEFAULTS.get(self.dataset, "randaugment")

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        _check_choice("method", self.method, METHODS)
        _check_choice("model", self.model, MODELS)
        _check_choice("neuron", self.neuron, ("lif", "if"))
        _check_choice("surrogate", self.surrogate, ("atan", "sigmoid"))
        _check_choice("interlayer_loss", self.interlayer_loss, INTERLAYER_LOSSES)
        _check_choice("top_loss", self.top_loss, TOP_LOSSES)
        if self.top_loss != "ce" and self.method != "bsd":
            raise ConfigError(f"top_loss {self.top_loss!r} applies to --method bsd (got {self.method!r})")
        _check_run(self)
        if self.lr is not None:
            _check_float("lr", self.lr, positive=True)
        for name in ("v_th", "v_th_backward", "temperature", "width"):
            if getattr(self, name) is not None:
                _check_float(name, getattr(self, name), positive=True)
        if self.warmup_steps is not None:
            _check_int("warmup_steps", self.warmup_steps, 0)
        for name in ("lam", "weight_decay"):
            _check_float(name, getattr(self, name), positive=False)
        if self.grad_clip is not None:
            _check_float("grad_clip", self.grad_clip, positive=True)
        if self.augment is not None:
            _check_choice("augment", self.augment, AUGMENTS)
        if self.ra_n is not None:
            _check_int("ra_n", self.ra_n, 1, maximum=RA_MAX_OPS)
        if self.ra_m is not None:
            _check_int("ra_m", self.ra_m, 0, maximum=RA_MAX_MAGNITUDE)
        if (self.ra_n is not None or self.ra_m is not None) and self._augment() != "randaugment":
            raise ConfigError(f"ra_n / ra_m only apply with augment 'randaugment' "
                              f"(augment for {self.dataset} is {self._augment()!r})")
        if self.normalize is not None and not isinstance(self.normalize, bool):
            raise ConfigError(f"normalize must be true or false, got {self.normalize!r}")
        if self.normalize and self.model != "cnn":
            raise ConfigError(f"input normalisation applies to the cnn model only (got model {self.model!r})")
        if self.neuron == "lif" and not (_is_number(self.tau) and self.tau > 1):
            raise ConfigError(f"tau must be > 1 for LIF neurons, got {self.tau!r}")
        self._check_sizes()

    def _check_sizes(self) -> None:
        try:
            info = dataset_info(self.dataset)
        except DatasetError as exc:
            raise ConfigError(str(exc)) from None
        if self.sizes is None:
            return
        if self.model != "mlp":
            raise ConfigError(f"sizes only apply to the mlp model (the {self.model} is sized by width), "
                              f"got {self.sizes!r}")
        sizes = list(self.sizes) if isinstance(self.sizes, (list, tuple)) else None
        if not sizes or len(sizes) < 2 or not all(_is_int(n) and n >= 1 for n in sizes):
            raise ConfigError(f"sizes must list >= 2 positive layer sizes, got {self.sizes!r}")
        n_in, n_cls = math.prod(info.input_shape), info.num_classes
        if sizes[0] != n_in or sizes[-1] != n_cls:
            raise ConfigError(f"mlp sizes {sizes} do not fit {self.dataset}: the first must be {n_in} "
                              f"(flattened {'x'.join(map(str, info.input_shape))} input), the last {n_cls} (classes)")


def _plain(value):
    if isinstance(value, np.generic):  # numpy scalars would need pickle globals to load
        return value.item()
    return value


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


# Config checks shared by every trainer's config (BSD, RNN, autoencoder, MSKD); ``error`` lets a
# trainer raise its own ConfigError subclass.
def _check_choice(name, value, choices, error=None) -> None:
    if value not in choices:
        raise (error or ConfigError)(f"unknown {name} {value!r} (choose from {', '.join(choices)})")


def _check_int(name, value, minimum, error=None, maximum=None) -> None:
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
        raise (error or ConfigError)(f"{name} must be an integer {bound}, got {value!r}")


def _check_float(name, value, positive, error=None) -> None:
    # `not x > 0` also rejects NaN
    if not _is_number(value) or not math.isfinite(value) or not (value > 0 if positive else value >= 0):
        raise (error or ConfigError)(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, "
                                     f"got {value!r}")


def _check_run(cfg, error=None) -> None:
    """The run-size fields every image trainer's config has: epochs, timesteps and batch_size
    >= 1, seed >= 0, train_samples / test_samples None or >= 1."""
    for name in ("epochs", "timesteps", "batch_size"):
        _check_int(name, getattr(cfg, name), 1, error)
    _check_int("seed", cfg.seed, 0, error)
    for name in ("train_samples", "test_samples"):
        if getattr(cfg, name) is not None:
            _check_int(name, getattr(cfg, name), 1, error)


def _check_keys(cls, d, error=None) -> None:
    """A config dict read back from a checkpoint: a dict with only ``cls``'s field names."""
    if not isinstance(d, dict):
        raise (error or ConfigError)(f"config must be a dict, got {type(d).__name__}")
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise (error or ConfigError)(f"unknown config key(s): {', '.join(map(str, unknown))}")


# ---------------------------------------------------------------- models
def build_model(cfg: TrainConfig) -> torch.nn.Module:
    """The untrained model described by ``cfg`` (validated and defaults resolved first)."""
    cfg = cfg.resolved()
    common = dict(timesteps=cfg.timesteps, v_th=cfg.v_th, tau=cfg.tau, neuron_model=cfg.neuron,
                  surrogate=cfg.surrogate)
    bsd = dict(v_th_backward=cfg.v_th_backward, lam=cfg.lam, interlayer=cfg.interlayer_loss,
               temperature=cfg.temperature, top=cfg.top_loss)
    if cfg.model == "cnn":
        info = dataset_info(cfg.dataset)
        shape = dict(input_shape=info.input_shape, num_classes=info.num_classes, width=cfg.width,
                     normalize=cfg.normalize)
        if cfg.method == "ann":
            return ANNCNN(**shape, timesteps=cfg.timesteps)
        if cfg.method == "bptt":
            return BPTTCNN(**shape, **common)
        return BSDCNN(**shape, **common, **bsd)
    sizes = cfg.layer_sizes()
    if cfg.method == "ann":
        return ANNMLP(sizes, timesteps=cfg.timesteps)
    if cfg.method == "bptt":
        return BPTTMLP(sizes, **common)
    return BSDMLP(sizes, **common, **bsd)


# ---------------------------------------------------------------- one step
def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.detach()).all())


def _check_losses(losses: dict, currents: dict) -> None:
    bad = [name for name, loss in losses.items() if not _finite(loss)]
    if not bad:
        return
    # A corrupt layer also spoils the losses that use its current as their target;
    # blame the layer whose own current is non-finite, else the first bad loss.
    culprit = next((n for n in bad if n in currents and not _finite(currents[n])), bad[0])
    others = [n for n in bad if n != culprit]
    raise TrainingDiverged(f"loss of {culprit} is not finite"
                           + (f" (also affected: {', '.join(others)})" if others else ""), culprit)


def _grad_norms(model) -> list:
    """[(layer name, its gradients, their 2-norm as a 0-dim tensor)] for every weight layer.

    One foreach pass over all gradients; a layer's norm is the norm of its
    tensors' norms (what ``clip_grad_norm_`` computes)."""
    layers = [(name, [p.grad for p in layer.parameters() if p.grad is not None])
              for name, layer in model.named_weight_layers()]
    flat = [g for _, grads in layers for g in grads]
    norms = iter(torch._foreach_norm(flat) if flat else [])
    out = []
    for name, grads in layers:
        own = [next(norms) for _ in grads]
        norm = torch.linalg.vector_norm(torch.stack(own)) if own else None
        out.append((name, grads, norm))
    return out


def _check_grads(norms) -> None:
    # BPTT can hide a NaN weight from its loss (NaN currents never cross the
    # threshold, so spikes stay binary) but not from the surrogate gradient.
    # A NaN or inf element makes its layer's norm non-finite; only then are the
    # elements themselves checked (a finite layer may still overflow the norm).
    for name, grads, norm in norms:
        if norm is not None and not _finite(norm) and not all(_finite(g) for g in grads):
            raise TrainingDiverged(f"gradient of {name} is not finite", name)


def _clip(model, max_norm, norms=None) -> None:
    """Scale gradients to norm <= ``max_norm``: per weight layer when ``model.local_clipping``
    (a global norm would be a non-local signal), else over the whole model. Same scale
    factor as ``torch.nn.utils.clip_grad_norm_``, max_norm / (norm + 1e-6) capped at 1;
    layers already within the bound are left untouched (their factor is exactly 1)."""
    if max_norm is None:
        return
    norms = [n for n in (norms if norms is not None else _grad_norms(model)) if n[2] is not None]
    if not norms:
        return
    if model.local_clipping:
        groups = [(grads, norm) for _, grads, norm in norms]
    else:
        groups = [([g for _, grads, _ in norms for g in grads],
                   torch.linalg.vector_norm(torch.stack([norm for _, _, norm in norms])))]
    coefs = (max_norm / (torch.stack([norm for _, norm in groups]) + 1e-6)).clamp(max=1.0)
    for (grads, _), coef, value in zip(groups, coefs, coefs.tolist()):
        if value < 1.0:
            torch._foreach_mul_(grads, coef)


def make_optimizer(model, lr: float, weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """AdamW over all parameters, one group; the fused single-kernel update on CPU/CUDA
    (same algorithm as the default per-tensor loop, several times faster on CPU)."""
    params = list(model.parameters())
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def train_step(model, optimizer, x: torch.Tensor, y: torch.Tensor, grad_clip=0.3):
    """One combined forward of all paths, one backward of the summed local losses, one update.

    Returns (summed loss, info); raises TrainingDiverged before touching the weights.
    """
    return apply_local_losses(model, optimizer, repeat_time(x, model.timesteps), y, grad_clip)


def apply_local_losses(model, optimizer, x_seq, y, grad_clip):
    """Sum the model's local losses, check them, one backward, check and clip gradients, step.
    Shared by every BSD variant (MLP, CNN, RNN) and the baselines."""
    model.train()
    losses, info = model.training_losses(x_seq, y)
    stacked = torch.stack(list(losses.values()))
    if not _finite(stacked):
        _check_losses(losses, info["currents"])
    total = stacked.sum()
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    norms = _grad_norms(model)
    _check_grads(norms)
    _clip(model, grad_clip, norms)
    optimizer.step()
    return float(total.detach()), info


@torch.no_grad()
def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    """Test accuracy of the forward path with the cosine-to-label-code rule."""
    model.eval()
    correct = 0
    for xb, yb in batches(x, y, batch_size):
        counts = model(repeat_time(xb, model.timesteps)).sum(0)
        correct += int((cosine_predict(counts) == yb).sum())
    return correct / len(y)


# ---------------------------------------------------------------- loop
@contextmanager
def _deterministic(seed: int, threads: int | None):
    previous = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])


def _epoch_seed(seed: int, epoch: int, *salt: int) -> int:
    """The data-order seed of one epoch (``salt`` separates streams of different trainers)."""
    return int(np.random.SeedSequence([seed, epoch, *salt]).generate_state(1)[0])


_AUGMENT_SALT = 1  # separates the augmentation stream from the data-order stream of an epoch


def make_augment(cfg: TrainConfig):
    """The training-batch transform of a resolved config (None: no augmentation)."""
    return RandAugment(cfg.ra_n, cfg.ra_m) if cfg.augment == "randaugment" else None


def _train_epoch(model, optimizer, scheduler, data, cfg: TrainConfig, epoch: int, bar) -> dict:
    x, y = data
    loss_sum, correct, rate_sums, ham_sums = 0.0, 0, {}, {}
    augment = make_augment(cfg)
    gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch, _AUGMENT_SALT)) if augment else None
    for step, (xb, yb) in enumerate(batches(x, y, cfg.batch_size, shuffle=True, seed=_epoch_seed(cfg.seed, epoch))):
        if augment is not None:  # training batches only; evaluate() sees the test set as loaded
            xb = augment(xb, gen)
        try:
            loss, info = train_step(model, optimizer, xb, yb, cfg.grad_clip)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"epoch {epoch}, step {step + 1}: {exc}", exc.layer) from None
        scheduler.step()
        loss_sum += loss
        correct += int((cosine_predict(info["output"].detach().sum(0)) == yb).sum())
        for name, rate in firing_rates(info["spikes"]).items():
            rate_sums[name] = rate_sums.get(name, 0.0) + rate * len(yb)
        for name, sim in hamming_similarity(info["spikes"]).items():
            ham_sums[name] = ham_sums.get(name, 0.0) + sim * len(yb)
        bar.update(1)
        bar.set_postfix(epoch=epoch, loss=f"{loss / len(yb):.3f}", refresh=False)
    return {"train_loss": loss_sum / len(y), "train_accuracy": correct / len(y),
            "firing_rates": {k: v / len(y) for k, v in rate_sums.items()},
            "hamming": {k: v / len(y) for k, v in ham_sums.items()}}


def hamming_similarity(spikes: dict) -> dict:
    """Fig. 3c: {"layer i": fraction of equal entries of s_i and s'_i} for every layer with both."""
    out = {}
    for name, sb in spikes.items():
        if name.startswith("s'") and f"s{name[2:]}" in spikes:
            s = spikes[f"s{name[2:]}"]
            if s.shape == sb.shape:
                out[f"layer {name[2:]}"] = float((s.detach() == sb.detach()).float().mean())
    return out


def make_scheduler(optimizer, total_steps: int, warmup_steps: int = 0):
    """Cosine annealing over ``total_steps``, after ``warmup_steps`` of linear warm-up.

    The warm-up is capped at a fifth of the run; without warm-up this is exactly
    torch's CosineAnnealingLR (as before). Returns (scheduler, effective warm-up).
    """
    total = max(int(total_steps), 1)
    warm = min(int(warmup_steps), total // 5)
    if warm == 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), 0

    def factor(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), warm


def _load_data(cfg: TrainConfig):
    train = load_split(cfg.dataset, "train", cfg.data_dir, cfg.train_samples, cfg.seed)
    test = load_split(cfg.dataset, "test", cfg.data_dir, cfg.test_samples, cfg.seed)
    return train, test


def write_checkpoint(path, fmt: str, config: dict, state_dict: dict, epoch: int, **extra) -> None:
    """Atomically write a checkpoint of plain values and tensors (loadable with ``weights_only=True``)."""
    payload = {"format": fmt, "config": config, "epoch": epoch,
               "state_dict": {k: v.detach().clone() for k, v in state_dict.items()}, **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _save_checkpoint(path: Path, model, cfg: TrainConfig, epoch: int) -> None:
    write_checkpoint(path, CHECKPOINT_FORMAT, cfg.to_dict(), model.state_dict(), epoch)


def train(cfg: TrainConfig, out_dir, progress: bool = True, threads: int | None = None) -> dict:
    """Train ``cfg``'s model, writing out_dir/model.pt and out_dir/metrics.json after each epoch.

    Defaults (sizes, lr) are resolved first, so the recorded config is explicit.
    ``threads`` sets torch's CPU threads for the run (restored after): 1 is much
    faster for the small digits MLPs on a busy machine.
    Returns the metrics dict. Raises ConfigError, DatasetError or TrainingDiverged
    (after which the files of the last completed epoch, if any, are left intact).
    """
    cfg = cfg.resolved()
    if threads is not None and not (_is_int(threads) and threads >= 1):
        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    with _deterministic(cfg.seed, threads):
        model = build_model(cfg)
        train_data, test_data = _load_data(cfg)
        norm = getattr(model, "input_normalizer", None)
        if norm is not None:  # statistics of the (subsampled) training split, never of test data
            norm.set_stats(*channel_stats(train_data[0]))
        steps = cfg.epochs * math.ceil(len(train_data[1]) / cfg.batch_size)
        with tqdm(total=steps, desc=f"{cfg.method} {cfg.dataset}", disable=not progress, unit="batch") as bar:
            return _fit(model, cfg, train_data, test_data, Path(out_dir), bar)


def _fit(model, cfg: TrainConfig, train_data, test_data, out: Path, bar) -> dict:
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    scheduler, warm = make_scheduler(optimizer, bar.total, cfg.warmup_steps)
    metrics = {"test_accuracy": None, "history": [], "config": cfg.to_dict(), "effective_warmup_steps": warm}
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        try:
            stats = _train_epoch(model, optimizer, scheduler, train_data, cfg, epoch, bar)
        except TrainingDiverged as exc:
            kept = f"last good checkpoint: {out / 'model.pt'} (epoch {epoch - 1})" if epoch > 1 else "no checkpoint written"
            raise TrainingDiverged(f"training diverged at {exc}; {kept}", exc.layer) from None
        acc = evaluate(model, *test_data)
        entry = {"epoch": epoch, "train_loss": stats["train_loss"],
                 "train_accuracy": stats["train_accuracy"], "test_accuracy": acc,
                 "seconds": time.perf_counter() - start, "firing_rates": stats["firing_rates"]}
        if stats["hamming"]:
            entry["hamming"] = stats["hamming"]
        if hasattr(model, "weight_alignment"):
            entry["alignment"] = model.weight_alignment()
        metrics["history"].append(entry)
        metrics["test_accuracy"] = acc
        _save_checkpoint(out / "model.pt", model, cfg, epoch)
        write_json(out / "metrics.json", metrics)
        bar.set_postfix(epoch=epoch, test_acc=f"{acc:.3f}")
    return metrics


# ---------------------------------------------------------------- loading
def _fit_state(model, state, path) -> None:
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'state_dict' is missing or not a dict")
    expected = model.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(f"{path}: state dict does not fit its config (missing {missing[:3]}, unexpected {extra[:3]})")
    for key, ref in expected.items():
        if not isinstance(state[key], torch.Tensor) or state[key].shape != ref.shape:
            got = getattr(state[key], "shape", type(state[key]).__name__)
            raise CheckpointError(f"{path}: state dict does not fit its config ({key}: {tuple(got)} vs {tuple(ref.shape)})")
    model.load_state_dict(state)


def safe_load(path, error=CheckpointError, what: str = "checkpoint", missing=None):
    """``torch.load(path, weights_only=True)`` on the CPU; a missing or unreadable file raises
    ``error`` (``missing`` for a missing one, default ``error``) with one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise (missing or error)(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, forbidden pickle globals...
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise error(f"{path}: corrupt or truncated {what} ({type(exc).__name__}: {detail})") from None


def read_checkpoint(path, fmt: str, kind: str = "snncc", error=CheckpointError) -> dict:
    """A checkpoint dict whose ``format`` is ``fmt``, or ``error`` naming what was found."""
    ckpt = safe_load(path, error)
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise error(f"{path}: not an {kind} checkpoint (format {found!r}, expected {fmt!r})")
    return ckpt


def load_checkpoint(path):
    """Rebuild the model saved by :func:`train` -> (model in eval mode, TrainConfig)."""
    path = Path(path)
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT)
    try:
        config = ckpt.get("config")
        if isinstance(config, dict) and "normalize" not in config:
            config = {**config, "normalize": False}  # written before input normalisation existed
        cfg = TrainConfig.from_dict(config)
        model = build_model(cfg)
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad config in checkpoint ({exc})") from None
    _fit_state(model, ckpt.get("state_dict"), path)
    return model.eval(), cfg
