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
  with ``KD(s) = KL( softmax(s/T) || softmax(t/T) )``, T the KD temperature (``kd_temperature``;
  ``tau`` is the membrane time constant): eq. 9 *as written* -- the student distribution first (a
  reverse KL, mode-seeking) and no ``T^2`` factor; ``kd_scaling="hinton"`` (``--kd-scaling hinton``)
  multiplies it by ``T^2`` (Hinton et al.), which keeps gradient magnitudes independent of T.
* ``L_r = ||X_hat - X||^2`` (Sec. 4, "the mean-squared error"), X the direct-encoded input: averaged over
  every element of the (T, C, H, W) error (``recon_loss="mean"``, both recipes); ``"sum"`` is the formula
  read literally, each sample's squared norm averaged over the batch (docs/methods.md).

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
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from tqdm import tqdm

from snncc.data.datasets import dataset_info, load_split
from snncc.models.mskd_net import AuxHead, MSKDNet, Reconstruction
from snncc.models.resnet import SpikingResNet
from snncc.training.config import is_int
from snncc.training.distributed import Dist, dist_setup, shard, sync_buffers
from snncc.training.errors import MSKDError, TeacherError, TeacherNotFoundError
from snncc.training.evaluation import LogitAccuracy
from snncc.training.evaluation import evaluate as evaluate_metric
from snncc.training.methods.kd import kd_kl
from snncc.training.methods.mskd import mskd_loss
from snncc.training.loop import TrainingDiverged, deterministic, epoch_seed, fit
from snncc.training.mskd_config import (CHECKPOINT_FORMAT, METHODS, TEACHER_METHODS, HeadPositionError,
                                        MSKDCheckpointError, MSKDConfig, MSKDConfigError, build_net,
                                        build_student, head_positions, load_mskd_checkpoint)
from snncc.training.teachers import (LOGITS_FORMAT, load_teacher, resolve_teacher, save_teacher_logits,
                                     teacher_logits_for)

# the MSKD API in one place (defined in the modules above)
__all__ = ["AuxHead", "CHECKPOINT_FORMAT", "HeadPositionError", "LOGITS_FORMAT", "METHODS", "MSKDCheckpointError",
           "MSKDConfig", "MSKDConfigError", "MSKDError", "MSKDNet", "Reconstruction", "TEACHER_METHODS",
           "TeacherError", "TeacherNotFoundError", "build_net", "build_student", "evaluate", "export_mskd_checkpoint",
           "head_positions", "kd_kl", "load_mskd_checkpoint", "load_teacher", "make_optimizer", "mskd_loss",
           "save_teacher_logits", "teacher_logits_for", "train_mskd", "train_step"]


# ---------------------------------------------------------------- one step
def _unwrap(net):
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def train_step(net, optimizer, x, y, teacher_logits, cfg: MSKDConfig, chunks: int = 1, lr: float | None = None):
    """One optimisation step on a batch. ``chunks`` > 1 splits it into ghost batches (each with its own
    batch-norm statistics, gradients averaged): the single-process equivalent of ``chunks`` DDP ranks.
    Returns (loss, info) with info: correct predictions, loss parts, block firing rates."""
    cfg = cfg.resolved()  # the recipe's values (e.g. recon_loss) for a config built by hand
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
    method = cfg.training_method()
    # the spiking student reads its direct-encoded input; ``net`` (maybe DDP-wrapped) runs the forward
    x = xb if cfg.is_ann else inner.student.encode(xb)
    losses, info = method.losses(net, x, yb, teacher=tb, cfg=cfg)
    total, parts = sum(losses.values()), info["parts"]
    if not torch.isfinite(total.detach()):
        bad = ", ".join(k for k in ("L_c", "L_k", "L_r") if not math.isfinite(parts.get(k, 0.0))) or "total"
        raise TrainingDiverged(f"loss is not finite ({bad}; L_c {parts.get('L_c'):.4g}, L_k {parts.get('L_k'):.4g}, "
                               f"L_r {parts.get('L_r'):.4g})", bad)
    (total / chunks).backward()
    return float(total.detach()) / chunks, int((info["output"].detach().argmax(1) == yb).sum()), parts, info["rates"]


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 256, d: Dist = Dist()) -> float:
    """Test accuracy of a student (logits from its readout) or ANN; sharded over ranks when distributed."""
    idx = shard(np.arange(len(y)), d)
    parts = (idx[s:s + batch_size] for s in range(0, len(idx), batch_size))
    data = ((torch.from_numpy(np.ascontiguousarray(x[sel])), torch.from_numpy(y[sel])) for sel in parts)

    def all_reduce(sums):
        t = torch.tensor(sums, dtype=torch.float64)
        dist.all_reduce(t)
        return t.tolist()

    return evaluate_metric(model, data, LogitAccuracy(isinstance(model, SpikingResNet)),
                           all_reduce if d.world > 1 else None)["test_accuracy"]


# ---------------------------------------------------------------- loop
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
    d = dist_setup()
    try:
        with deterministic(cfg.seed, None):
            return _train(cfg, out, progress and d.main, teacher, resume, d, ghost_batches)
    finally:
        if d.owns_group:
            dist.destroy_process_group()


def _train(cfg, out, progress, teacher, resume, d, ghost_batches=1):
    net = build_net(cfg)
    (x_tr, y_tr) = load_split(cfg.dataset, "train", cfg.data_dir, cfg.train_samples, cfg.seed)
    (x_te, y_te) = load_split(cfg.dataset, "test", cfg.data_dir, cfg.test_samples, cfg.seed)
    teacher_info = {}
    t_logits = resolve_teacher(cfg, teacher, x_tr, y_tr, out, d, resume, teacher_info)
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
        for n_step, gidx in enumerate(bar, 1):
            idx = torch.from_numpy(shard(gidx, d))
            t0 = time.perf_counter()
            try:
                loss, info = train_step(model, optimizer, x_t[idx], y_t[idx],
                                        None if t_logits is None else t_logits[idx], cfg, chunks=ghost_batches,
                                        lr=_cosine(cfg.lr, step, total_steps))
            except TrainingDiverged as exc:
                raise TrainingDiverged(f"epoch {epoch}, step {n_step}: {exc}", exc.layer) from None
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
        sync_buffers(student, d)  # the ranks evaluate rank 0's model, the one saved
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
               barrier=dist.barrier if d.world > 1 else None, error=MSKDCheckpointError,
               upgrade=lambda old: MSKDConfig.from_dict(old).to_dict())


def export_mskd_checkpoint(path, name: str | None = None):
    """Export the student saved at ``path`` to a SpikeGraph (heads / reconstruction are not part of it).

    The example input is (T, 1, *input_shape) of the run's dataset; the graph's metadata records the
    timesteps, model and method. An 'ann' checkpoint has no spiking network and is refused."""
    from snncc.export import export

    student, cfg = load_mskd_checkpoint(path)
    if cfg.is_ann:
        raise MSKDCheckpointError(f"{path}: an 'ann' checkpoint is not a spiking network and cannot be exported")
    shape = dataset_info(cfg.dataset).input_shape
    return export(student, torch.zeros(cfg.timesteps, 1, *shape), timesteps=cfg.timesteps,
                  name=name or cfg.model, metadata={"model": cfg.model, "method": cfg.method,
                                                    "dataset": cfg.dataset, "readout": student.readout})
