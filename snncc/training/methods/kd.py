"""Knowledge distillation's divergence (MSKD paper eq. 9): KL between the student's and the teacher's
softened distributions at a KD temperature. The training method that uses it on the final head
(``kd``), and on the auxiliary heads as well (``mskd``), is :mod:`snncc.training.methods.mskd`."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
          squared: bool = True) -> torch.Tensor:
    """Eq. 9: ``KL(softmax(s/T) || softmax(t/T))`` at KD temperature T -- student first, as written in the
    paper -- averaged over the batch, times ``T**2`` when ``squared``."""
    return kd_kl_log(student_logits, F.log_softmax(teacher_logits.detach() / temperature, dim=1), temperature,
                     squared)


def kd_kl_log(student_logits, log_pt, temperature, squared):
    """:func:`kd_kl` given the teacher's log-softmax ``log_pt`` at ``temperature`` (computed once per
    batch and shared by the final head and every auxiliary head)."""
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    kl = (log_ps.exp() * (log_ps - log_pt)).sum(1).mean()
    return kl * (temperature * temperature) if squared else kl
