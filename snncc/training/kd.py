"""Knowledge-distillation losses (MSKD paper eqs. 8-11): KD on logits at a KD temperature, and the
multi-stage sum over the final head and the auxiliary heads plus reconstruction."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from snncc.training.mskd_config import MSKDConfigError


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
