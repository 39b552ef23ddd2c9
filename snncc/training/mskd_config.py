"""MSKD configuration, the student and training network it describes, and its checkpoints.

See :mod:`snncc.training.mskd` for the method; the auxiliary heads and reconstruction module are
:mod:`snncc.models.mskd_net`, the ResNets :mod:`snncc.models.resnet`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from torch import nn

from snncc.data.datasets import DatasetError, dataset_info
from snncc.models.mskd_net import MSKDNet
from snncc.models.resnet import ModelError, build_resnet, parse_name
from snncc.neuron import NeuronParams
from snncc.training.checkpoint import FORMATS, CheckpointError, read_checkpoint
from snncc.training.config import (ConfigError, check_choice, check_float, check_int, check_keys, check_run, fill,
                                   is_int, is_number)
from snncc.training.errors import MSKDConfigError, MSKDError
from snncc.training.methods.kd import KD_SCALINGS
from snncc.training.methods.mskd import RECON_LOSSES
from snncc.training.recipes import DEFAULT_RECIPE, RECIPES, recipe_defaults
from snncc.training.registry import ModelKind, Variant, lookup, method_names

CHECKPOINT_FORMAT = FORMATS["mskd"]
METHODS = tuple(method_names(ModelKind.RESNET))  # the registry's: ann, direct, kd, mskd, mskd-norecon
TEACHER_METHODS = tuple(m for m in METHODS if getattr(lookup(m, ModelKind.RESNET), "uses_teacher", False))
# The students' LIF: "paper" = MSKD eq. 1, u[t] = alpha u[t-1] (1 - z[t-1]) + W z[t] + b (the input is not
# scaled; snncc's decay_input=False, tau = 1 / (1 - alpha)), "bsd" = BSD eq. 2 (the input scaled by 1/tau)
LIF_FORMS = ("paper", "bsd")
PAPER_DECAY = 0.2  # Table 6 "decay rate" = eq. 1's alpha (docs/methods.md: why not 1 - alpha)
DEFAULT_TAU = {"paper": 1.0 / (1.0 - PAPER_DECAY), "bsd": 2.0}


# ---------------------------------------------------------------- errors
class HeadPositionError(MSKDConfigError):
    """An auxiliary head placed outside the student's residual blocks."""


class MSKDCheckpointError(MSKDError, CheckpointError):
    """An MSKD checkpoint is missing, unreadable or does not fit its config."""


# ---------------------------------------------------------------- config
@dataclass
class MSKDConfig:
    method: str = "mskd"
    model: str = "spike-resnet18"  # {spike,sew,ms}-resnet{18,34,50,101}; method 'ann' uses resnet{depth}
    dataset: str = "mnist"
    data_dir: str | None = None
    epochs: int | None = None
    timesteps: int = 4
    train_samples: int | None = None
    test_samples: int | None = None
    recipe: str = DEFAULT_RECIPE  # defaults of the None fields (snncc.training.recipes)
    batch_size: int | None = None  # global batch (split over ranks under DDP)
    lr: float | None = None
    optimizer: str | None = None  # paper: SGD, momentum 0.9, cosine schedule
    momentum: float | None = None
    weight_decay: float | None = None
    width: float = 1.0
    stem: str = "small"  # 'small' (28/32 px inputs) or 'imagenet'
    alpha: float = 0.2  # Table 6
    kd_temperature: float = 5.0  # KD temperature (Table 6)
    beta: float = 0.9  # reconstruction weight (Table 6)
    heads: int = 3  # M auxiliary heads, spread evenly over the residual blocks
    head_positions: tuple | None = None  # explicit 1-based block indices (overrides `heads`)
    head_weights_ce: tuple | None = None  # w_c^(m); None: all 1.0
    head_weights_kd: tuple | None = None  # w_k^(m); None: all 1.0
    adapter_channels: int = 128  # K of Table 7 before width scaling
    kd_scaling: str = "paper"  # "paper": eq. 11 as written; "hinton": KL x kd_temperature**2
    recon_loss: str | None = None  # L_r: "sum" the paper's squared norm per sample (batch mean), "mean" per element;
    # None: the recipe's (paper: sum; cpu: mean, since the squared norm diverges at the CPU learning rate)
    teacher: str | None = None  # MSKD 'ann' checkpoint, teacher-logits file, or 'dinov2:DIR' (local DINOv2 model)
    readout: str | None = None  # None: 'spike' for Spike-ResNet, 'mean' for SEW / MS
    spike_gain: float = 5.0  # logits = spike_gain * spike rate for the 'spike' readout
    connect: str = "add"  # SEW connect function
    neuron: str = "lif"
    lif_form: str = "paper"  # LIF_FORMS; checkpoints written before this field read as "bsd"
    v_th: float = 0.5  # MS-ResNet's threshold (the paper gives none); also BSD-form runs' (0.5: 15-25% firing)
    tau: float | None = None  # membrane time constant in steps; None: DEFAULT_TAU of the LIF form
    detach_reset: bool = True
    grad_clip: float | None = None
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("head_positions", "head_weights_ce", "head_weights_kd"):
            d[k] = None if d[k] is None else list(d[k])
        d["data_dir"] = None if self.data_dir is None else str(self.data_dir)
        d["teacher"] = None if self.teacher is None else str(self.teacher)
        return d

    @classmethod
    def from_dict(cls, d) -> "MSKDConfig":
        if isinstance(d, dict) and "tau_m" in d:  # written before the KD temperature was renamed
            d = {k: v for k, v in d.items() if k not in ("tau", "tau_m", "kd_tau_squared")} | {
                "kd_temperature": d.get("tau"), "tau": d["tau_m"],
                "kd_temperature_squared": d.get("kd_tau_squared", True)}
            d.setdefault("recipe", DEFAULT_RECIPE)
        if isinstance(d, dict) and "kd_temperature_squared" in d:  # written before eq. 11 was taken as written:
            d = {k: v for k, v in d.items() if k != "kd_temperature_squared"} | {  # T^2 flag, element-mean L_r
                "kd_scaling": "hinton" if d["kd_temperature_squared"] else "paper", "recon_loss": "mean"}
        if isinstance(d, dict) and "lif_form" not in d:  # written before the paper's neuron: BSD's eq. 2
            d = d | {"lif_form": "bsd"}
        check_keys(cls, d, MSKDConfigError)
        cfg = cls(**d)
        for k in ("head_positions", "head_weights_ce", "head_weights_kd"):
            if getattr(cfg, k) is not None:
                setattr(cfg, k, tuple(getattr(cfg, k)))
        return cfg

    # -- validation ------------------------------------------------------
    def resolved(self) -> "MSKDConfig":
        """A validated copy with the recipe's values for the None fields."""
        self.validate()
        return replace(self, **fill(self, recipe_defaults(self.recipe, self.method, "resnet", self.dataset)))

    def validate(self) -> None:
        _choice("recipe", self.recipe, RECIPES)
        self.training_method()  # a method the registry lists for ResNets
        if self.optimizer is not None:
            _choice("optimizer", self.optimizer, ("sgd", "adamw"))
        _choice("stem", self.stem, ("small", "imagenet"))
        _choice("kd_scaling", self.kd_scaling, KD_SCALINGS)
        if self.recon_loss is not None:
            _choice("recon_loss", self.recon_loss, RECON_LOSSES)
        _choice("neuron", self.neuron, ("lif", "if"))
        _choice("lif_form", self.lif_form, LIF_FORMS)
        if self.readout is not None:
            _choice("readout", self.readout, ("spike", "mean"))
        try:
            family, _ = parse_name(self.model)
            dataset_info(self.dataset)
        except (ModelError, DatasetError) as exc:
            raise MSKDConfigError(str(exc)) from None
        if family is None and self.training_method().variant is not Variant.RELU:
            raise MSKDConfigError(f"method {self.method!r} needs a spiking model "
                                  f"({{spike,sew,ms}}-resnetN), got {self.model!r}")
        check_run(self, MSKDConfigError)
        _int("adapter_channels", self.adapter_channels, 1)
        _int("heads", self.heads, 0)
        for name in ("lr", "kd_temperature", "width", "v_th", "spike_gain"):
            if getattr(self, name) is not None:
                _float(name, getattr(self, name), positive=True)
        for name in ("beta", "weight_decay", "momentum"):
            if getattr(self, name) is not None:
                _float(name, getattr(self, name), positive=False)
        _float("alpha", self.alpha, positive=False)
        if self.alpha > 1:
            raise MSKDConfigError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if self.grad_clip is not None:
            _float("grad_clip", self.grad_clip, positive=True)
        if self.neuron == "lif" and self.tau is not None and not (is_number(self.tau) and self.tau > 1):
            raise MSKDConfigError(f"tau must be > 1 for LIF neurons, got {self.tau!r}")
        if self.method in TEACHER_METHODS and self.teacher is not None and not isinstance(self.teacher, (str, Path)):
            raise MSKDConfigError(f"teacher must be a path, got {type(self.teacher).__name__}")
        if self.head_positions is not None:
            if not isinstance(self.head_positions, (list, tuple)) or \
                    not all(is_int(p) for p in self.head_positions):
                raise MSKDConfigError(f"head_positions must be a list of integers, got {self.head_positions!r}")
        for name in ("head_weights_ce", "head_weights_kd"):
            ws = getattr(self, name)
            if ws is not None and (not isinstance(ws, (list, tuple)) or
                                   not all(is_number(w) and math.isfinite(w) and w >= 0 for w in ws)):
                raise MSKDConfigError(f"{name} must be a list of numbers >= 0, got {ws!r}")

    def training_method(self):
        """The registry's method for (``method``, resnet); MSKDConfigError if there is none."""
        try:
            return lookup(self.method, ModelKind.RESNET)
        except ConfigError as exc:
            raise MSKDConfigError(str(exc)) from None

    @property
    def is_ann(self) -> bool:
        return self.training_method().variant is Variant.RELU

    @property
    def uses_heads(self) -> bool:
        return getattr(self.training_method(), "uses_heads", False)

    @property
    def uses_recon(self) -> bool:
        return getattr(self.training_method(), "uses_recon", False)


def _choice(name, value, choices):
    check_choice(name, value, choices, MSKDConfigError)


def _int(name, value, minimum):
    check_int(name, value, minimum, MSKDConfigError)


def _float(name, value, positive):
    check_float(name, value, positive, MSKDConfigError)


# ---------------------------------------------------------------- modules
def build_student(cfg: MSKDConfig) -> nn.Module:
    """The (untrained) spiking student, or the ANN ResNet for ``method='ann'``."""
    cfg.validate()
    info = dataset_info(cfg.dataset)
    family, depth = parse_name(cfg.model)
    if cfg.is_ann:
        return build_resnet(f"resnet{depth}", info.num_classes, info.input_shape[0], cfg.stem, cfg.width)
    return build_resnet(cfg.model, info.num_classes, info.input_shape[0], cfg.stem, cfg.width, cfg.timesteps,
                        info.input_shape[1:], neuron_params(cfg), "sigmoid", cfg.detach_reset, cfg.readout,
                        cfg.spike_gain, cfg.connect)


def neuron_params(cfg: MSKDConfig) -> NeuronParams:
    """The students' neuron: LIF in the configured form (tau: the form's default unless given), or IF."""
    if cfg.neuron != "lif":
        return NeuronParams(cfg.neuron, 2.0, cfg.v_th)
    tau = DEFAULT_TAU[cfg.lif_form] if cfg.tau is None else cfg.tau
    return NeuronParams("lif", tau, cfg.v_th, decay_input=cfg.lif_form == "bsd")


def head_positions(cfg: MSKDConfig, num_blocks: int) -> list:
    """1-based block indices of the auxiliary heads (evenly spread unless given explicitly)."""
    if cfg.head_positions is not None:
        pos = [int(p) for p in cfg.head_positions]
    else:
        m = cfg.heads
        if m >= num_blocks:
            raise HeadPositionError(f"{m} auxiliary heads do not fit {cfg.model}: it has {num_blocks} residual "
                                    f"blocks (at most {num_blocks - 1} heads)")
        pos = [int(math.floor(num_blocks * k / (m + 1) + 0.5)) for k in range(1, m + 1)]
    for p in pos:
        if not 1 <= p <= num_blocks:
            raise HeadPositionError(f"head position {p} is beyond the depth of {cfg.model} "
                                    f"(residual blocks are numbered 1..{num_blocks})")
    if len(set(pos)) != len(pos):
        raise HeadPositionError(f"head positions {pos} repeat a block")
    return pos


def build_net(cfg: MSKDConfig) -> nn.Module:
    """The module trained for ``cfg``: an :class:`MSKDNet` (student + heads + recon) or the ANN."""
    student = build_student(cfg)
    if cfg.is_ann:
        return student
    positions = head_positions(cfg, len(student.blocks())) if cfg.uses_heads else []
    if cfg.uses_heads:
        for name in ("head_weights_ce", "head_weights_kd"):
            ws = getattr(cfg, name)
            if ws is not None and len(ws) != len(positions):
                raise MSKDConfigError(f"{name} has {len(ws)} weights for {len(positions)} auxiliary heads")
    return MSKDNet(student, positions, cfg.adapter_channels, cfg.width, recon=cfg.uses_recon)


def read_mskd_checkpoint(path):
    path = Path(path)
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT, "MSKD", MSKDCheckpointError)
    try:
        cfg = MSKDConfig.from_dict(ckpt.get("config"))
        cfg.validate()
    except (MSKDError, TypeError) as exc:
        raise MSKDCheckpointError(f"{path}: bad config in checkpoint ({exc})") from None
    return ckpt, cfg


def load_state(module, state, path):
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise MSKDCheckpointError(f"{path}: state dict does not fit its config ({detail})") from None


def load_mskd_checkpoint(path):
    """-> (student module in eval mode, MSKDConfig): the exportable student (or the ANN for 'ann')."""
    ckpt, cfg = read_mskd_checkpoint(path)
    model = build_student(cfg)
    load_state(model, ckpt.get("state_dict"), path)
    return model.eval(), cfg
