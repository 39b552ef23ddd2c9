"""Multi-stage knowledge distillation (MSKD paper, eqs. 8-11) as a training method for spiking ResNets.

One loss, :func:`mskd_loss`, covers the four ResNet methods that train the spiking student; they
differ only in which terms are present (:class:`MultiStage`):

=================  =========  ==============  ================
method             teacher    aux. heads      reconstruction
=================  =========  ==============  ================
``direct``         no         no              no     (cross-entropy on the readout: BPTT)
``kd``             yes        no              no     (vanilla KD on the final head)
``mskd-norecon``   yes        yes             no
``mskd``           yes        yes             yes    (eq. 11)
=================  =========  ==============  ================

The network (:class:`snncc.models.mskd_net.MSKDNet`: student + heads + reconstruction module) is built by
:func:`snncc.training.mskd_config.build_net` from these flags; the trainer is :mod:`snncc.training.mskd`.
"""
from __future__ import annotations

import torch.nn.functional as F

from snncc.training.errors import MSKDConfigError
from snncc.training.methods.base import Method, ModelKind, TrainingMethod, Variant
from snncc.training.methods.kd import kd_kl_log

# L_r = ||X_hat - X||^2 (Sec. 4): "sum" is the squared norm of each sample's (T, C, H, W) reconstruction error,
# averaged over the batch like the CE and KL terms (the paper's; its scale does not depend on the batch size);
# "mean" averages over every element instead (snncc's convention before issue 16, kept to reproduce old runs).
RECON_LOSSES = ("sum", "mean")


def recon_loss(recon, target, kind: str = "sum", batch_dim: int = 1):
    """L_r between (T, B, C, H, W) ``recon`` and ``target`` (``batch_dim`` the batch axis), see RECON_LOSSES."""
    if kind not in RECON_LOSSES:
        raise MSKDConfigError(f"unknown reconstruction loss {kind!r} (choose from {', '.join(RECON_LOSSES)})")
    if kind == "mean":
        return F.mse_loss(recon, target)
    return F.mse_loss(recon, target, reduction="sum") / recon.shape[batch_dim]


def mskd_loss(final_logits, head_logits, labels, teacher_logits=None, recon=None, target=None, *,
              alpha=0.2, temperature=5.0, beta=0.9, w_c=None, w_k=None, scaling="paper", recon_kind="sum"):
    """Eq. 11 -> (total, parts). ``head_logits``: the M auxiliary heads' logits (may be empty).

    ``temperature`` is the KD temperature of eq. 9; ``scaling`` "paper" (eq. 11 as written) or "hinton"
    (KL x T**2, :mod:`~snncc.training.methods.kd`); ``recon_kind`` how L_r averages (:data:`RECON_LOSSES`).
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
        kd = [kd_kl_log(s, log_pt, temperature, scaling) for s in (final_logits, *head_logits)]
        l_k = kd[0] + sum(w * k for w, k in zip(w_k, kd[1:]))
        total = (1 - alpha) * l_c + alpha * l_k
        parts["kd"] = [float(k.detach()) for k in kd]
    else:
        l_k = final_logits.new_zeros(())
        total = l_c
    l_r = recon_loss(recon, target, recon_kind) if recon is not None else final_logits.new_zeros(())
    total = total + beta * l_r
    parts.update(L_c=float(l_c.detach()), L_k=float(l_k.detach()), L_r=float(l_r.detach()))
    return total, parts


class MultiStage(TrainingMethod):
    """Eq. 11 with the terms of one ResNet method (table above). ``losses(net, x, y, teacher, cfg)``:
    ``net`` an :class:`~snncc.models.mskd_net.MSKDNet` (or its DDP wrapper), ``x`` the direct-encoded
    (T, B, C, H, W) images (also the reconstruction target),
    ``teacher`` the batch's teacher logits (None without a teacher), ``cfg`` the resolved MSKDConfig
    (alpha, beta, KD temperature, head weights)."""

    variant = Variant.SPIKING

    def __init__(self, name: str, teacher: bool, heads: bool, recon: bool):
        self.name, self.uses_teacher, self.uses_heads, self.uses_recon = name, teacher, heads, recon

    def losses(self, net, x, y, teacher=None, cfg=None):
        logits, heads, recon, rates = net(x)
        total, parts = mskd_loss(logits, heads, y, teacher, recon, x if recon is not None else None,
                                 alpha=cfg.alpha, temperature=cfg.kd_temperature,
                                 beta=cfg.beta if self.uses_recon else 0.0,
                                 w_c=cfg.head_weights_ce, w_k=cfg.head_weights_kd,
                                 scaling=cfg.kd_scaling, recon_kind=cfg.recon_loss)
        return {"eq. 11": total}, {"output": logits, "parts": parts, "rates": rates, "spikes": {}, "currents": {}}


REGISTER = [
    (MultiStage(Method.DIRECT, teacher=False, heads=False, recon=False), (ModelKind.RESNET,)),
    (MultiStage(Method.KD, teacher=True, heads=False, recon=False), (ModelKind.RESNET,)),
    (MultiStage(Method.MSKD, teacher=True, heads=True, recon=True), (ModelKind.RESNET,)),
    (MultiStage(Method.MSKD_NORECON, teacher=True, heads=True, recon=False), (ModelKind.RESNET,)),
]
