"""MSKD teachers: an MSKD checkpoint (usually the 'ann' ResNet), a teacher-logits file, a module, or a
local DINOv2 model; their logits on the training subset are computed once and cached."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch import nn

from snncc.data.datasets import dataset_info, load_split
from snncc.fileio import atomic_path
from snncc.models.resnet import SpikingResNet
from snncc.training.checkpoint import safe_load
from snncc.training.distributed import Dist, shard
from snncc.training.errors import TeacherError, TeacherNotFoundError
from snncc.training.mskd_config import (CHECKPOINT_FORMAT, TEACHER_METHODS, MSKDConfig, MSKDConfigError,
                                        load_mskd_checkpoint)

LOGITS_FORMAT = "snncc-teacher-logits/1"


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
def _rows_gathered(fn, x: np.ndarray, width: int, batch_size: int, d: Dist, check=None):
    """``fn`` over all samples in batches (sharded over ranks, then gathered) -> (N, width);
    ``check(local)`` runs on each rank's rows before the gather."""
    idx = shard(np.arange(len(x)), d)
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
def teacher_logits_for(teacher, x: np.ndarray, num_classes: int, batch_size: int = 256, d: Dist = Dist(),
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


def resolve_teacher(cfg, teacher, x_tr, y_tr, out, d, resume, info):
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
