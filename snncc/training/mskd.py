"""Multi-stage (foundation-model) knowledge distillation for deep spiking ResNets (MSKD paper, Sec. 5).

``train_mskd(cfg, out_dir)`` trains one of

* ``ann``          -- a plain ReLU ResNet (the teacher / ANN baseline), cross-entropy only;
* ``direct``       -- the spiking student with cross-entropy on its final output only;
* ``kd``           -- vanilla KD on the final head: (1 - alpha) CE + alpha KL;
* ``mskd``         -- eq. 11: (1 - alpha) L_c + alpha L_k + beta L_r with M auxiliary heads
                      (eqs. 8-10) and the reconstruction module after the stem (App. A.5);
* ``mskd-norecon`` -- mskd with beta = 0 and no reconstruction module.

Losses (see :func:`mskd_loss`):

* ``L_c = CE(final) + sum_m w_c[m] CE(head_m)``                                  (eq. 8)
* ``L_k = KD(final) + sum_m w_k[m] KD(head_m)``                                  (eq. 10)
  with ``KD(s) = T^2 * KL( softmax(s/T) || softmax(t/T) )``, T the KD temperature
  (``kd_temperature``; ``tau`` is the membrane time constant): eq. 9 *as written* --
  the student distribution first (a reverse KL, mode-seeking). The ``T^2`` factor (Hinton et
  al.) keeps gradient magnitudes independent of T; ``kd_temperature_squared=False`` drops it.
* ``L_r = mean((X_hat - X)^2)`` over (T, B, C, H, W), X the direct-encoded input.

Auxiliary heads (App. A.2, Table 7): at M block outputs spread evenly over depth
(``heads=M``; or explicit 1-based ``head_positions``), the block output is averaged
over T (a firing-rate / mean-membrane map; the heads are ANNs) and fed to an adapter
``conv7x7/2-BN-LeakyReLU(0.01)-conv3x3-BN-LeakyReLU`` with K channels, then a prediction
head ``AdaptiveAvgPool(2x2)-Flatten-FC(4K, H)-BN1d-LeakyReLU-FC(H, classes)``; K = 128 and
H = 512 are scaled by the width multiplier. The reconstruction module (Table 14) reads the
stem features (before the stem pool): ``ConvTranspose (upsampling x1 or x2, C -> C/2)``,
time-distributed BN + ReLU, ``3x3 conv (C/2 -> C_in)``.

Heads and reconstruction live in :class:`MSKDNet` *beside* ``net.student``; only the student
is saved as the model and exported. Teacher logits are computed once per training sample
(the teacher runs in eval mode with no augmentation, so they never change) and cached in
``out_dir/teacher_logits.pt`` (reusable as ``teacher=`` for later runs). Teachers: an MSKD
checkpoint (usually the 'ann' ResNet), a teacher-logits file, or the paper's foundation model,
``dinov2:DIR`` -- a local DINOv2 directory with a loaded or fitted linear head
(:mod:`snncc.training.dinov2`).

Distributed: launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) or inside an
initialised process group, training uses DDP (gloo on CPU). Every global batch of
``batch_size`` samples is split into ``world_size`` contiguous shards (one per rank);
rank 0 writes the files. Batch norm statistics are per shard (CPU has no SyncBatchNorm),
so a run on W ranks equals a single-process run with ``chunks=W`` ghost batches
(:func:`train_step`), which is what ``tests/test_mskd_ddp.py`` checks.
"""
from __future__ import annotations

import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch import nn
from tqdm import tqdm

from snncc.data.datasets import DatasetError, dataset_info, load_split
from snncc.fileio import atomic_path
from snncc.models.resnet import ModelError, SpikingResNet, build_resnet, parse_name
from snncc.neuron import NeuronParams
from snncc.training.checkpoint import FORMATS, CheckpointError, read_checkpoint, safe_load
from snncc.training.config import (ConfigError, check_choice, check_float, check_int, check_keys, check_run, fill,
                                   is_int, is_number)
from snncc.training.errors import MSKDError, TeacherError, TeacherNotFoundError
from snncc.training.layers import TimeDistributed
from snncc.training.loop import deterministic, epoch_seed, fit
from snncc.training.recipes import DEFAULT_RECIPE, RECIPES, recipe_defaults

CHECKPOINT_FORMAT = FORMATS["mskd"]
LOGITS_FORMAT = "snncc-teacher-logits/1"
METHODS = ("ann", "direct", "kd", "mskd", "mskd-norecon")
TEACHER_METHODS = ("kd", "mskd", "mskd-norecon")


# ---------------------------------------------------------------- errors
class MSKDConfigError(MSKDError, ConfigError):
    """An invalid MSKD configuration value."""


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
    kd_temperature_squared: bool = True
    teacher: str | None = None  # MSKD 'ann' checkpoint, teacher-logits file, or 'dinov2:DIR' (local DINOv2 model)
    readout: str | None = None  # None: 'spike' for Spike-ResNet, 'mean' for SEW / MS
    spike_gain: float = 5.0  # logits = spike_gain * spike rate for the 'spike' readout
    connect: str = "add"  # SEW connect function
    neuron: str = "lif"
    v_th: float = 0.5  # 1.0 leaves ~5% firing at T=2 and tiny runs barely learn; 0.5 gives 15-25%
    tau: float = 2.0  # membrane time constant
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
        _choice("method", self.method, METHODS)
        if self.optimizer is not None:
            _choice("optimizer", self.optimizer, ("sgd", "adamw"))
        _choice("stem", self.stem, ("small", "imagenet"))
        _choice("neuron", self.neuron, ("lif", "if"))
        if self.readout is not None:
            _choice("readout", self.readout, ("spike", "mean"))
        try:
            family, _ = parse_name(self.model)
            dataset_info(self.dataset)
        except (ModelError, DatasetError) as exc:
            raise MSKDConfigError(str(exc)) from None
        if family is None and self.method != "ann":
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
        if self.neuron == "lif" and not (is_number(self.tau) and self.tau > 1):
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

    @property
    def uses_heads(self) -> bool:
        return self.method in ("mskd", "mskd-norecon")

    @property
    def uses_recon(self) -> bool:
        return self.method == "mskd"


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
    if cfg.method == "ann":
        return build_resnet(f"resnet{depth}", info.num_classes, info.input_shape[0], cfg.stem, cfg.width)
    params = NeuronParams(cfg.neuron, cfg.tau if cfg.neuron == "lif" else 2.0, cfg.v_th)
    return build_resnet(cfg.model, info.num_classes, info.input_shape[0], cfg.stem, cfg.width, cfg.timesteps,
                        info.input_shape[1:], params, "sigmoid", cfg.detach_reset, cfg.readout, cfg.spike_gain,
                        cfg.connect)


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


class AuxHead(nn.Module):
    """ANN adapter + prediction head (Table 7) on a block output averaged over time.

    What the adapter sees. The paper does not spell out whether the adapter runs per time step
    or on the time-averaged block output; the text and tables point to the average:

    * Sec. 5: "Each head is implemented as a lightweight ANN adapter that maps the spiking
      feature Z_{l_m} into logits h_m : Z_{l_m} -> y_m ... where y_m in R^C is the student
      prediction over C classes at the m-th head" -- one prediction per sample, from an ANN;
    * Table 7 lists plain ``Conv2d`` / ``BatchNorm2d`` / ``BatchNorm1d`` on (B, C, H, W)
      maps, whereas Table 14 / App. A.5, where the paper does mean per-step processing,
      says so explicitly: "a compact time-distributed decoder", input "(T, B, C, H', W')",
      "Temporal BN", "predicts a per-step reconstruction".

    So the adapter reads the firing-rate (SEW / Spike) or mean-membrane (MS) map
    ``Z.mean(0)``, the same temporal average the student's own readout applies. This is also
    the cheap order: running the adapter per step would cost T times the compute.
    """

    def __init__(self, in_channels: int, channels: int, hidden: int, num_classes: int):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.01)  # noqa: E731
        self.adapter = nn.Sequential(
            nn.Conv2d(in_channels, channels, 7, 2, 3, bias=False), nn.BatchNorm2d(channels), act(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), act())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, hidden),
                                  nn.BatchNorm1d(hidden), act(), nn.Linear(hidden, num_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (T, B, C, H, W) -> rate map -> logits. sum(0) / T is z.mean(0) (bit for bit), but its backward hands the
        # student a broadcast view of the (B, C, H, W) gradient instead of materialising a (T, B, C, H, W)
        # quotient first (mean's backward), which saved ~1.4 ms per step for the first head at width 0.25.
        return self.head(self.adapter(z.sum(0) / z.shape[0]))


class Reconstruction(nn.Module):
    """Time-distributed decoder of the stem features back to the input (Table 14)."""

    def __init__(self, channels: int, in_channels: int, factor: int, out_size):
        super().__init__()
        mid = max(1, channels // 2)
        up = (nn.ConvTranspose2d(channels, mid, 4, 2, 1) if factor == 2 else
              nn.ConvTranspose2d(channels, mid, 3, 1, 1))
        self.up, self.bn = TimeDistributed(up), TimeDistributed(nn.BatchNorm2d(mid))
        self.proj = TimeDistributed(nn.Conv2d(mid, in_channels, 3, 1, 1))
        self.out_size = tuple(out_size)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        # Per step, as Table 14 specifies (T*B images, BN statistics over all of them), computed in
        # channels-last layout: the same operations and parameters as the NCHW TimeDistributed path
        # (outputs agree to float rounding, tests/test_mskd_perf.py), but oneDNN runs these convolutions
        # with few output channels (C -> C/2 -> C_in = 1 or 3) about twice as fast in NHWC on CPU.
        t, b = f.shape[:2]
        x = f.reshape(t * b, *f.shape[2:]).contiguous(memory_format=torch.channels_last)
        x = self.proj.module(torch.relu(self.bn.module(self.up.module(x))))
        x = x[..., :self.out_size[0], :self.out_size[1]].contiguous()
        return x.reshape(t, b, *x.shape[1:])


class MSKDNet(nn.Module):
    """Training wrapper: ``student`` (exported) + auxiliary ``heads`` and ``recon`` (training only)."""

    def __init__(self, student: SpikingResNet, positions=(), adapter_channels=128, width=1.0, recon=False):
        super().__init__()
        self.student = student
        self.positions = [int(p) for p in positions]
        chans = student.block_channels()
        k = max(4, int(round(adapter_channels * width)))
        hidden = max(8, int(round(512 * width)))
        self.heads = nn.ModuleList(AuxHead(chans[p - 1], k, hidden, student.num_classes) for p in self.positions)
        self.recon = None
        if recon:
            factor = student.input_size[0] // student.stem_feature_size[0]
            self.recon = Reconstruction(student.stem_channels, student.stem.conv.module.in_channels,
                                        2 if factor >= 2 else 1, student.input_size)

    def forward(self, x_seq: torch.Tensor):
        """(T, B, C, H, W) -> (final logits, [head logits], reconstruction or None, per-block mean rates)."""
        out, stem, blocks = self.student.forward_features(x_seq)
        heads = [h(blocks[p - 1]) for h, p in zip(self.heads, self.positions)]
        recon = self.recon(stem) if self.recon is not None else None
        rates = torch.stack([b.detach().mean() for b in blocks])
        return self.student.logits(out), heads, recon, rates


# ---------------------------------------------------------------- losses
def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
          squared: bool = True) -> torch.Tensor:
    """Eq. 9: ``KL(softmax(s/T) || softmax(t/T))`` at KD temperature T -- student first, as written in the
    paper -- averaged over the batch, times ``T**2`` when ``squared``."""
    return _kd_kl_log(student_logits, F.log_softmax(teacher_logits.detach() / temperature, dim=1), temperature,
                      squared)


def _kd_kl_log(student_logits, log_pt, temperature, squared):
    """:func:`kd_kl` given the teacher's log-softmax ``log_pt`` at ``temperature`` (computed once per
    batch and shared by the final head and every auxiliary head)."""
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    kl = (log_ps.exp() * (log_ps - log_pt)).sum(1).mean()
    return kl * (temperature * temperature) if squared else kl


def mskd_loss(final_logits, head_logits, labels, teacher_logits=None, recon=None, target=None, *,
              alpha=0.2, temperature=5.0, beta=0.9, w_c=None, w_k=None, squared=True):
    """Eq. 11 -> (total, parts). ``head_logits``: the M auxiliary heads' logits (may be empty).

    Without ``teacher_logits`` the loss is ``L_c + beta L_r`` (no alpha split); without ``recon``
    ``L_r`` is 0. ``parts`` holds L_c, L_k, L_r and the per-head CE / KD terms (floats)."""
    m = len(head_logits)
    w_c = [1.0] * m if w_c is None else list(w_c)
    w_k = [1.0] * m if w_k is None else list(w_k)
    if len(w_c) != m or len(w_k) != m:
        raise MSKDConfigError(f"{m} auxiliary heads but {len(w_c)} CE and {len(w_k)} KD weights")
    ce = [F.cross_entropy(final_logits, labels)] + [F.cross_entropy(h, labels) for h in head_logits]
    l_c = ce[0] + sum(w * c for w, c in zip(w_c, ce[1:]))
    parts = {"ce": [float(c.detach()) for c in ce]}
    if teacher_logits is not None:
        log_pt = F.log_softmax(teacher_logits.detach() / temperature, dim=1)  # once, for all M + 1 heads
        kd = [_kd_kl_log(s, log_pt, temperature, squared) for s in (final_logits, *head_logits)]
        l_k = kd[0] + sum(w * k for w, k in zip(w_k, kd[1:]))
        total = (1 - alpha) * l_c + alpha * l_k
        parts["kd"] = [float(k.detach()) for k in kd]
    else:
        l_k = final_logits.new_zeros(())
        total = l_c
    l_r = F.mse_loss(recon, target) if recon is not None else final_logits.new_zeros(())
    total = total + beta * l_r
    parts.update(L_c=float(l_c.detach()), L_k=float(l_k.detach()), L_r=float(l_r.detach()))
    return total, parts


# ---------------------------------------------------------------- distributed
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist_setup() -> _Dist:
    if dist.is_available() and dist.is_initialized():
        return _Dist(dist.get_rank(), dist.get_world_size(), False)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "MASTER_ADDR" in os.environ:
        dist.init_process_group("gloo")
        return _Dist(dist.get_rank(), dist.get_world_size(), True)
    return _Dist()


def _shard(idx: np.ndarray, d: _Dist) -> np.ndarray:
    return np.array_split(idx, d.world)[d.rank] if d.world > 1 else idx


# ---------------------------------------------------------------- teachers
def _ensure_logits(t, num_classes, what):
    if t.ndim != 2 or t.shape[1] != num_classes:
        raise TeacherError(f"{what} predicts {t.shape[-1] if t.ndim else '?'} classes but the dataset has "
                           f"{num_classes}")
    return t


class _LogitFn:
    """Teacher as a function of a (B, C, H, W) batch -> logits; SNN teachers are direct-encoded."""

    def __init__(self, module: nn.Module):
        self.module = module.eval()

    @torch.no_grad()
    def __call__(self, x):
        m = self.module
        if isinstance(m, SpikingResNet):
            return m.logits(m(m.encode(x)))
        out = m(x)
        return getattr(out, "logits", out)


def load_teacher(path, cfg: MSKDConfig):
    """A teacher from a file: an MSKD checkpoint (any method; usually 'ann') -> a module, a
    teacher-logits file -> a (N, classes) tensor aligned with cfg's training subset, or
    ``dinov2:DIR`` / a directory -> a :class:`~snncc.training.dinov2.DinoV2Teacher` (a local
    DINOv2 model; needs ``transformers``; its linear head is loaded or fitted as a probe)."""
    from snncc.training.dinov2 import load_dinov2, parse_teacher_spec

    kind, path = parse_teacher_spec(path)
    num_classes = dataset_info(cfg.dataset).num_classes
    if kind == "dinov2" or path.is_dir():
        return load_dinov2(path, num_classes)
    obj = safe_load(path, TeacherError, "teacher file", missing=TeacherNotFoundError)
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt == CHECKPOINT_FORMAT:
        module, tcfg = load_mskd_checkpoint(path)
        if tcfg.dataset != cfg.dataset:
            n = dataset_info(tcfg.dataset).num_classes
            if n != num_classes:
                raise TeacherError(f"teacher {path} predicts {n} classes ({tcfg.dataset}) but {cfg.dataset} "
                                   f"has {num_classes}")
        return module
    if fmt == LOGITS_FORMAT:
        logits = obj.get("logits")
        if not isinstance(logits, torch.Tensor):
            raise TeacherError(f"{path}: teacher-logits file has no 'logits' tensor")
        _ensure_logits(logits, num_classes, f"teacher {path}")
        meta = obj.get("data", {})
        want = _data_key(cfg)
        if meta != want:
            raise TeacherError(f"{path}: teacher logits were computed for {meta}, not for this run's training "
                               f"data {want}")
        return logits.float()
    raise TeacherError(f"{path}: not a teacher (format {fmt!r}; expected {CHECKPOINT_FORMAT!r} or {LOGITS_FORMAT!r})")


def _data_key(cfg: MSKDConfig) -> dict:
    return {"dataset": cfg.dataset, "split": "train", "train_samples": cfg.train_samples, "seed": cfg.seed}


@torch.no_grad()
def _rows_gathered(fn, x: np.ndarray, width: int, batch_size: int, d: _Dist, check=None):
    """``fn`` over all samples in batches (sharded over ranks, then gathered) -> (N, width);
    ``check(local)`` runs on each rank's rows before the gather."""
    idx = _shard(np.arange(len(x)), d)
    parts = [fn(torch.from_numpy(np.ascontiguousarray(x[idx[s:s + batch_size]]))).float()
             for s in range(0, len(idx), batch_size)]
    local = torch.cat(parts) if parts else torch.zeros(0, width)
    if check is not None:
        check(local)
    if d.world > 1:
        sizes = [len(s) for s in np.array_split(np.arange(len(x)), d.world)]
        bufs = [torch.zeros(n, width) for n in sizes]
        padded = [torch.zeros(max(sizes), width) for _ in sizes]
        mine = torch.zeros(max(sizes), width)
        mine[:len(local)] = local
        dist.all_gather(padded, mine)
        for b, p in zip(bufs, padded):
            b.copy_(p[:len(b)])
        local = torch.cat(bufs)
    return local


@torch.no_grad()
def teacher_logits_for(teacher, x: np.ndarray, num_classes: int, batch_size: int = 256, d: _Dist = _Dist(),
                       y: np.ndarray | None = None):
    """Run the teacher once over all samples (sharded over ranks, then gathered) -> (N, classes).

    A DINOv2 teacher without a loaded head first has its linear probe fitted on the features of
    these samples and their labels ``y`` (every rank fits the same probe on the gathered features)."""
    from snncc.training.dinov2 import DinoV2Teacher

    if isinstance(teacher, DinoV2Teacher):
        feats = _rows_gathered(teacher.features, x, teacher.feature_dim, batch_size, d)
        if teacher.head is None:
            if y is None:
                raise TeacherError(f"teacher {teacher.source} has no classification head: fitting its linear "
                                   f"probe needs the training labels")
            teacher.fit_probe(feats, torch.from_numpy(np.asarray(y)), num_classes)
        return _ensure_logits(teacher.head(feats), num_classes, f"teacher {teacher.source}")
    fn = teacher if isinstance(teacher, _LogitFn) else _LogitFn(teacher)
    return _rows_gathered(fn, x, num_classes, batch_size, d,
                          check=lambda t: _ensure_logits(t, num_classes, f"teacher {type(fn.module).__name__}"))


def save_teacher_logits(teacher, cfg: MSKDConfig, path, batch_size: int = 256) -> torch.Tensor:
    """Precompute ``teacher``'s logits on cfg's training subset into a file usable as ``cfg.teacher``."""
    x, y = load_split(cfg.dataset, "train", cfg.data_dir, cfg.train_samples, cfg.seed)
    if isinstance(teacher, (str, Path)):
        teacher = load_teacher(teacher, cfg)
    logits = teacher_logits_for(teacher, x, dataset_info(cfg.dataset).num_classes, batch_size, y=y)
    _write_logits(path, logits, cfg, _describe(teacher))
    return logits


def _describe(teacher) -> dict | None:
    return teacher.describe() if hasattr(teacher, "describe") else None


def _write_logits(path, logits, cfg, teacher_info=None):
    payload = {"format": LOGITS_FORMAT, "logits": logits.contiguous(), "data": _data_key(cfg)}
    if teacher_info is not None:
        payload["teacher"] = teacher_info  # provenance only (e.g. the DINOv2 head: loaded or probe)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


# ---------------------------------------------------------------- one step
def _encode(model, x):
    return model.encode(x) if isinstance(model, SpikingResNet) else x


def _unwrap(net):
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def train_step(net, optimizer, x, y, teacher_logits, cfg: MSKDConfig, chunks: int = 1, lr: float | None = None):
    """One optimisation step on a batch. ``chunks`` > 1 splits it into ghost batches (each with its own
    batch-norm statistics, gradients averaged): the single-process equivalent of ``chunks`` DDP ranks.
    Returns (loss, info) with info: correct predictions, loss parts, block firing rates."""
    net.train()
    inner = _unwrap(net)
    if lr is not None:
        for g in optimizer.param_groups:
            g["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss_sum, correct, parts_acc, rates = 0.0, 0, {}, None
    pieces = np.array_split(np.arange(len(y)), chunks)
    for i, piece in enumerate(pieces):
        sync = i == len(pieces) - 1 or not isinstance(net, nn.parallel.DistributedDataParallel)
        with nullcontext() if sync else net.no_sync():  # DDP: all-reduce once, after the last ghost batch
            loss_i, correct_i, parts, r = _chunk_backward(net, inner, x[piece], y[piece], teacher_logits, piece,
                                                          cfg, chunks)
        loss_sum += loss_i
        correct += correct_i
        rates = r if rates is None else (rates if r is None else rates + r)
        for k in ("L_c", "L_k", "L_r"):
            parts_acc[k] = parts_acc.get(k, 0.0) + parts[k] / chunks
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss_sum, {"correct": correct, "parts": parts_acc,
                      "rates": None if rates is None else (rates / chunks).tolist()}


def _chunk_backward(net, inner, xb, yb, teacher_logits, piece, cfg, chunks):
    tb = None if teacher_logits is None else teacher_logits[piece]
    r = None
    if isinstance(inner, MSKDNet):
        x_seq = inner.student.encode(xb)
        logits, heads, recon, r = net(x_seq)
        total, parts = mskd_loss(logits, heads, yb, tb, recon, x_seq if recon is not None else None,
                                 alpha=cfg.alpha, temperature=cfg.kd_temperature,
                                 beta=cfg.beta if cfg.uses_recon else 0.0,
                                 w_c=cfg.head_weights_ce, w_k=cfg.head_weights_kd,
                                 squared=cfg.kd_temperature_squared)
    else:  # the ANN
        logits = net(xb)
        total = F.cross_entropy(logits, yb)
        parts = {"L_c": float(total.detach()), "L_k": 0.0, "L_r": 0.0}
    if not torch.isfinite(total.detach()):
        raise FloatingPointError(f"non-finite loss ({parts})")
    (total / chunks).backward()
    return float(total.detach()) / chunks, int((logits.detach().argmax(1) == yb).sum()), parts, r


@torch.no_grad()
def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 256, d: _Dist = _Dist()) -> float:
    """Test accuracy of a student (logits from its readout) or ANN; sharded over ranks when distributed."""
    model.eval()
    idx = _shard(np.arange(len(y)), d)
    correct = 0
    for s in range(0, len(idx), batch_size):
        sel = idx[s:s + batch_size]
        xb = torch.from_numpy(np.ascontiguousarray(x[sel]))
        out = model(_encode(model, xb))
        logits = model.logits(out) if isinstance(model, SpikingResNet) else out
        correct += int((logits.argmax(1) == torch.from_numpy(y[sel])).sum())
    if d.world > 1:
        t = torch.tensor([correct], dtype=torch.float64)
        dist.all_reduce(t)
        correct = int(t.item())
    return correct / len(y)


# ---------------------------------------------------------------- loop
def build_net(cfg: MSKDConfig) -> nn.Module:
    """The module trained for ``cfg``: an :class:`MSKDNet` (student + heads + recon) or the ANN."""
    student = build_student(cfg)
    if cfg.method == "ann":
        return student
    positions = head_positions(cfg, len(student.blocks())) if cfg.uses_heads else []
    if cfg.uses_heads:
        for name in ("head_weights_ce", "head_weights_kd"):
            ws = getattr(cfg, name)
            if ws is not None and len(ws) != len(positions):
                raise MSKDConfigError(f"{name} has {len(ws)} weights for {len(positions)} auxiliary heads")
    return MSKDNet(student, positions, cfg.adapter_channels, cfg.width, recon=cfg.uses_recon)


def make_optimizer(cfg, params):
    """The recipe's optimiser for ``cfg`` (SGD with momentum, or AdamW) over ``params``."""
    cfg = cfg.resolved()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _cosine(lr, step, total):
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total)))


def _global_batches(n, cfg, epoch, world):
    order = np.random.default_rng(epoch_seed(cfg.seed, epoch)).permutation(n)
    out = [order[s:s + cfg.batch_size] for s in range(0, n, cfg.batch_size)]
    return [b for b in out if len(b) >= world]  # every rank needs at least one sample


def _read_checkpoint(path):
    path = Path(path)
    ckpt = read_checkpoint(path, CHECKPOINT_FORMAT, "MSKD", MSKDCheckpointError)
    try:
        cfg = MSKDConfig.from_dict(ckpt.get("config"))
        cfg.validate()
    except (MSKDError, TypeError) as exc:
        raise MSKDCheckpointError(f"{path}: bad config in checkpoint ({exc})") from None
    return ckpt, cfg


def _load_state(module, state, path):
    try:
        module.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        raise MSKDCheckpointError(f"{path}: state dict does not fit its config ({detail})") from None


def load_mskd_checkpoint(path):
    """-> (student module in eval mode, MSKDConfig): the exportable student (or the ANN for 'ann')."""
    ckpt, cfg = _read_checkpoint(path)
    model = build_student(cfg)
    _load_state(model, ckpt.get("state_dict"), path)
    return model.eval(), cfg


def train_mskd(cfg: MSKDConfig, out_dir, progress: bool = True, teacher=None, resume: bool = False,
               ghost_batches: int = 1) -> dict:
    """Train ``cfg`` writing ``out_dir/model.pt`` (student checkpoint) and ``metrics.json`` after every epoch.

    ``teacher`` (kd / mskd methods): a torch module mapping (B, C, H, W) to logits, a (N, classes) logits
    tensor aligned with the training subset, or None to use ``cfg.teacher`` (a path). ``resume=True``
    continues from ``out_dir/model.pt`` if it exists (same config except ``epochs``). Under torchrun
    the run is data-parallel and only rank 0 writes. ``ghost_batches`` > 1 splits every (per-rank)
    batch into that many ghost batches (own batch-norm statistics, accumulated gradients): a
    single-process run with ``ghost_batches=W`` reproduces a W-rank DDP run. Returns the metrics dict.
    """
    if not is_int(ghost_batches) or ghost_batches < 1:
        raise MSKDConfigError(f"ghost_batches must be an integer >= 1, got {ghost_batches!r}")
    cfg = cfg.resolved()
    out = Path(out_dir)
    d = _dist_setup()
    try:
        with deterministic(cfg.seed, None):
            return _train(cfg, out, progress and d.main, teacher, resume, d, ghost_batches)
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _resolve_teacher(cfg, teacher, x_tr, y_tr, out, d, resume, info):
    """The (N, classes) teacher logits of the training subset (computed once and cached in
    ``out/teacher_logits.pt``); ``info`` receives a description of a DINOv2 teacher."""
    if cfg.method not in TEACHER_METHODS:
        return None
    num_classes = dataset_info(cfg.dataset).num_classes
    cache = out / "teacher_logits.pt"
    if teacher is None and resume and cache.is_file():  # resumed runs reuse the cached logits
        try:
            logits = load_teacher(cache, cfg)
        except TeacherError:
            pass
        else:
            described = torch.load(cache, map_location="cpu", weights_only=True).get("teacher")
            if isinstance(described, dict):
                info.update(described)
            return logits
    if teacher is None and cfg.teacher is None:
        raise MSKDConfigError(f"method {cfg.method!r} needs a teacher (a checkpoint, logits file or module)")
    if teacher is None:
        teacher = load_teacher(cfg.teacher, cfg)
    if isinstance(teacher, torch.Tensor):
        logits = _ensure_logits(teacher.float(), num_classes, "teacher logits")
        if len(logits) != len(x_tr):
            raise TeacherError(f"teacher logits cover {len(logits)} samples but the training set has {len(x_tr)}")
        return logits
    if not isinstance(teacher, nn.Module):
        raise TeacherError(f"teacher must be a module, a logits tensor or a path, got {type(teacher).__name__}")
    logits = teacher_logits_for(teacher, x_tr, num_classes, d=d, y=y_tr)
    described = _describe(teacher)
    if described is not None:
        info.update(described)
    if d.main:
        _write_logits(cache, logits, cfg, described)
    return logits


def _train(cfg, out, progress, teacher, resume, d, ghost_batches=1):
    net = build_net(cfg)
    (x_tr, y_tr) = load_split(cfg.dataset, "train", cfg.data_dir, cfg.train_samples, cfg.seed)
    (x_te, y_te) = load_split(cfg.dataset, "test", cfg.data_dir, cfg.test_samples, cfg.seed)
    teacher_info = {}
    t_logits = _resolve_teacher(cfg, teacher, x_tr, y_tr, out, d, resume, teacher_info)
    optimizer = make_optimizer(cfg, net.parameters())
    metrics = {"method": cfg.method, "recipe": cfg.recipe, "test_accuracy": None, "history": [],
               "config": cfg.to_dict(), "world_size": d.world, "ghost_batches": ghost_batches}
    if teacher_info:
        metrics["teacher"] = teacher_info
    if isinstance(net, MSKDNet):
        metrics["head_positions"] = net.positions
    model = nn.parallel.DistributedDataParallel(net) if d.world > 1 else net
    student = net.student if isinstance(net, MSKDNet) else net
    n_steps = [len(_global_batches(len(y_tr), cfg, e, d.world * ghost_batches)) for e in range(1, cfg.epochs + 1)]
    total_steps = sum(n_steps)
    x_t, y_t = torch.from_numpy(x_tr), torch.from_numpy(y_tr)

    def run_epoch(epoch):
        start = time.perf_counter()
        step = sum(n_steps[:epoch - 1])  # the cosine schedule's position is a function of the epoch
        loss_sum, correct, seen, parts_sum, rate_sum, step_times = 0.0, 0, 0, {}, None, []
        batches = _global_batches(len(y_tr), cfg, epoch, d.world * ghost_batches)
        bar = tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", disable=not progress, leave=False)
        for gidx in bar:
            idx = torch.from_numpy(_shard(gidx, d))
            t0 = time.perf_counter()
            loss, info = train_step(model, optimizer, x_t[idx], y_t[idx],
                                    None if t_logits is None else t_logits[idx], cfg, chunks=ghost_batches,
                                    lr=_cosine(cfg.lr, step, total_steps))
            step_times.append(time.perf_counter() - t0)
            step += 1
            n = len(idx)
            loss_sum, correct, seen = loss_sum + loss * n, correct + info["correct"], seen + n
            for k, v in info["parts"].items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * n
            if info["rates"] is not None:
                r = np.asarray(info["rates"]) * n
                rate_sum = r if rate_sum is None else rate_sum + r
            bar.set_postfix(loss=f"{loss:.3f}")
        stats = torch.tensor([loss_sum, correct, seen], dtype=torch.float64)
        if d.world > 1:
            dist.all_reduce(stats)
        acc = evaluate(student, x_te, y_te, d=d)
        entry = {"epoch": epoch, "train_loss": float(stats[0] / stats[2]), "train_accuracy": float(stats[1] / stats[2]),
                 "test_accuracy": acc, "seconds": time.perf_counter() - start,
                 "seconds_per_step": float(np.median(step_times)) if step_times else None,
                 "loss_parts": {k: v / seen for k, v in parts_sum.items()}}
        if rate_sum is not None:
            entry["block_output_mean"] = [float(v) for v in rate_sum / seen]
        return entry

    def checkpoint():
        aux = {k: v for k, v in net.state_dict().items() if not k.startswith("student.")} \
            if isinstance(net, MSKDNet) else {}
        return {"state_dict": student.state_dict(), "aux_state_dict": aux}

    return fit(out, CHECKPOINT_FORMAT, cfg.to_dict(), cfg.seed, cfg.epochs, net, optimizer, None, metrics,
               run_epoch, lambda e: {"test_accuracy": e["test_accuracy"]}, checkpoint, resume=resume, main=d.main,
               barrier=dist.barrier if d.world > 1 else None, error=MSKDCheckpointError)


def export_mskd_checkpoint(path, name: str | None = None):
    """Export the student saved at ``path`` to a SpikeGraph (heads / reconstruction are not part of it).

    The example input is (T, 1, *input_shape) of the run's dataset; the graph's metadata records the
    timesteps, model and method. An 'ann' checkpoint has no spiking network and is refused."""
    from snncc.exporter import export

    student, cfg = load_mskd_checkpoint(path)
    if cfg.method == "ann":
        raise MSKDCheckpointError(f"{path}: an 'ann' checkpoint is not a spiking network and cannot be exported")
    shape = dataset_info(cfg.dataset).input_shape
    return export(student, torch.zeros(cfg.timesteps, 1, *shape), timesteps=cfg.timesteps,
                  name=name or cfg.model, metadata={"model": cfg.model, "method": cfg.method,
                                                    "dataset": cfg.dataset, "readout": student.readout})
