"""DINOv2 foundation-model teacher for MSKD, loaded from a local directory (no hub access).

The MSKD paper distils DINOv2-B into the SNN (Sec. 5: "We use DINOv2-B as the teacher"); its
teacher is a classifier -- the frozen DINOv2 backbone plus a linear head: on ImageNet the
released linear classifier ("The teacher DINOv2-B achieves an accuracy of 84.41%", Sec. 6.1),
on other datasets a linear probe ("We use linear probes for the fine-grained datasets that
train additional classifiers for each of them", Sec. 6.2). :class:`DinoV2Teacher` is that
classifier, with the head of Hugging Face's ``Dinov2ForImageClassification`` (and of DINOv2's
own linear evaluation): ``Linear([CLS token, mean of the patch tokens])`` on the final
layer-normed tokens. The head is

* **loaded** when the directory holds a ``Dinov2ForImageClassification`` (its class count
  must equal the dataset's), e.g. ``facebook/dinov2-base-imagenet1k-1-layer`` saved locally;
* otherwise **fitted** as a linear probe on the training subset's features (multinomial
  logistic regression on standardised features with scikit-learn's default L2 strength,
  C = 1, full-batch L-BFGS, deterministic) -- the paper's recipe for datasets without a
  released head.

Inputs (float (B, C, H, W) in [0, 1], snncc's dataset convention) are brought to DINOv2's:
grey images are replicated to the model's channels, resized (bilinear) to a side that is a
multiple of the patch size -- ``crop_size`` of the directory's ``preprocessor_config.json``
if present (224 for the released models), else ``config.image_size`` rounded down to a
multiple of the patch -- and normalised with the processor's mean / std (ImageNet's by
default). The teacher runs once per training sample (its logits are cached by MSKD).

``transformers`` is an optional dependency (pyproject extra ``dinov2``, pinned in
requirements/base.txt); models are read with ``local_files_only=True``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from snncc.training.errors import TeacherError, TeacherNotFoundError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PREFIX = "dinov2:"


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TeacherError(f"{path}: unreadable {what} ({type(exc).__name__})") from None
    if not isinstance(obj, dict):
        raise TeacherError(f"{path}: {what} is not a JSON object")
    return obj


def _input_geometry(path: Path, config) -> tuple:
    """(side, mean, std) of the inputs the model expects (see the module docstring)."""
    patch = int(config.patch_size)
    side, mean, std = int(config.image_size), IMAGENET_MEAN, IMAGENET_STD
    proc = path / "preprocessor_config.json"
    if proc.is_file():
        p = _read_json(proc, "preprocessor config")
        crop = p.get("crop_size")
        if isinstance(crop, dict):
            crop = crop.get("height", crop.get("shortest_edge"))
        if isinstance(crop, int) and crop > 0:
            side = crop
        mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
    side = max(patch, side // patch * patch)
    return side, mean, std


class DinoV2Teacher(nn.Module):
    """A DINOv2 backbone + linear head as a (B, C, H, W) -> logits classifier (module docstring)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear | None, side: int, mean, std, source: str):
        super().__init__()
        self.backbone, self.head, self.side, self.source = backbone.eval(), head, int(side), source
        self.num_channels = int(backbone.config.num_channels)
        if len(mean) != self.num_channels or len(std) != self.num_channels:
            raise TeacherError(f"{source}: image_mean / image_std have {len(mean)} / {len(std)} entries for a "
                               f"{self.num_channels}-channel model")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.head_kind = "loaded" if head is not None else None
        self.probe_train_accuracy = None
        self.requires_grad_(False)  # a frozen teacher

    @property
    def feature_dim(self) -> int:
        return 2 * int(self.backbone.config.hidden_size)

    @property
    def num_classes(self) -> int | None:
        return None if self.head is None else self.head.out_features

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> DINOv2 pixel values (B, channels, side, side)."""
        if x.shape[1] == 1 and self.num_channels != 1:
            x = x.expand(-1, self.num_channels, -1, -1)
        elif x.shape[1] != self.num_channels:
            raise TeacherError(f"teacher {self.source} takes {self.num_channels}-channel images, the data have "
                               f"{x.shape[1]} channels")
        if tuple(x.shape[-2:]) != (self.side, self.side):
            x = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[CLS token, mean patch token] of the final (layer-normed) DINOv2 layer: (B, 2 * hidden)."""
        tokens = self.backbone(pixel_values=self.preprocess(x)).last_hidden_state
        return torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise TeacherError(f"teacher {self.source} has no classification head yet (fit_probe first)")
        return self.head(self.features(x))

    @torch.no_grad()
    def fit_probe(self, feats: torch.Tensor, labels: torch.Tensor, num_classes: int, l2: float | None = None,
                  max_iter: int = 500) -> float:
        """Fit the linear head on training features: multinomial logistic regression on standardised
        features, ``mean CE + l2 / 2 * ||W||^2`` (bias not penalised), full-batch L-BFGS in float64.
        The default ``l2 = 1 / N`` is scikit-learn's ``LogisticRegression(C=1)`` objective. Returns the
        probe's training accuracy."""
        feats, labels = feats.double(), labels.long()
        l2 = 1.0 / len(labels) if l2 is None else float(l2)
        mu, sd = feats.mean(0), feats.std(0, unbiased=False).clamp_min(1e-6)
        z = (feats - mu) / sd
        w = torch.zeros(z.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            with torch.enable_grad():
                loss = F.cross_entropy(z @ w + b, labels) + 0.5 * l2 * (w * w).sum()
                loss.backward()
            return loss

        opt.step(closure)
        head = nn.Linear(z.shape[1], num_classes).requires_grad_(False)
        head.weight.copy_((w / sd[:, None]).t().float())  # fold the standardisation into the head
        head.bias.copy_((b - (mu / sd) @ w).float())
        self.head, self.head_kind = head, "probe"
        acc = float((head(feats.float()).argmax(1) == labels).double().mean())
        self.probe_train_accuracy = acc
        return acc

    def describe(self) -> dict:
        return {"kind": "dinov2", "source": self.source, "head": self.head_kind, "input_side": self.side,
                "feature_dim": self.feature_dim, "probe_train_accuracy": self.probe_train_accuracy}


def load_dinov2(path, num_classes: int) -> DinoV2Teacher:
    """A :class:`DinoV2Teacher` from a local directory written by ``save_pretrained``.

    Raises TeacherNotFoundError (no such directory) or TeacherError (not a directory, no
    config.json, not a DINOv2 model, unreadable weights, a head for another class count,
    ``transformers`` missing) with a one-line message."""
    path = Path(path)
    if not path.exists():
        raise TeacherNotFoundError(f"DINOv2 teacher directory not found: {path}")
    if not path.is_dir():
        raise TeacherError(f"DINOv2 teacher {path} is not a directory (expected a model saved with "
                           f"save_pretrained: config.json + weights)")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise TeacherError(f"DINOv2 teacher {path} has no config.json (expected a Hugging Face model directory "
                           f"written by save_pretrained)")
    meta = _read_json(cfg_file, "model config")
    if meta.get("model_type") != "dinov2":
        raise TeacherError(f"teacher {path} is a {meta.get('model_type')!r} model, not DINOv2 (model_type 'dinov2')")
    try:
        import transformers
    except ImportError:
        raise TeacherError(f"teacher {path} is a DINOv2 model but `transformers` is not installed (pip install "
                           f"'snncc[dinov2]'), or precompute its logits into a teacher-logits file") from None
    from transformers import Dinov2Config, Dinov2ForImageClassification, Dinov2Model

    classifier = "Dinov2ForImageClassification" in (meta.get("architectures") or [])
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        config = Dinov2Config.from_pretrained(str(path), local_files_only=True)
        if classifier and config.num_labels != num_classes:
            raise TeacherError(f"teacher {path} predicts {config.num_labels} classes but the dataset has "
                               f"{num_classes}")
        cls = Dinov2ForImageClassification if classifier else Dinov2Model
        model = cls.from_pretrained(str(path), local_files_only=True)
    except TeacherError:
        raise
    except Exception as exc:  # noqa: BLE001 -- missing / corrupt weights, bad config values
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        raise TeacherError(f"teacher {path}: cannot load the DINOv2 model ({type(exc).__name__}: {detail})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    model = model.float().eval()
    side, mean, std = _input_geometry(path, config)
    if classifier:
        return DinoV2Teacher(model.dinov2, model.classifier, side, mean, std, str(path))
    return DinoV2Teacher(model, None, side, mean, std, str(path))


def parse_teacher_spec(spec) -> tuple:
    """``'dinov2:DIR'`` -> ('dinov2', Path(DIR)); anything else -> (None, Path(spec))."""
    s = str(spec)
    if s.startswith(PREFIX):
        return "dinov2", Path(s[len(PREFIX):])
    return None, Path(s)

