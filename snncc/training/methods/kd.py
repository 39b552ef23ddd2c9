"""Knowledge distillation's divergence (MSKD paper eq. 9): KL between the student's and the teacher's
softened distributions at a KD temperature (``kd_temperature``: never ``tau``, which is the membrane time
constant everywhere in snncc). The training method that uses it on the final head (``kd``), and on the
auxiliary heads as well (``mskd``), is :mod:`snncc.training.methods.mskd`.

``KD_SCALINGS``: ``"paper"`` is eq. 9 / 11 as written (the KL itself); ``"hinton"`` multiplies it by T**2
(Hinton et al. 2015), which keeps the soft-target gradients' size independent of T.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


KD_SCALINGS = ("paper", "hinton")


def check_kd_scaling(scaling: str) -> str:
    if scaling not in KD_SCALINGS:
        raise ValueError(f"unknown KD scaling {scaling!r} (choose from {', '.join(KD_SCALINGS)})")
    return scaling


def kd_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
          scaling: str = "paper") -> torch.Tensor:
    """Eq. 9: ``KL(softmax(s/T) || softmax(t/T))`` at KD temperature T -- student first, as written in the
    paper -- averaged over the batch; times ``T**2`` with ``scaling="hinton"``."""
    return kd_kl_log(student_logits, F.log_softmax(teacher_logits.detach() / temperature, dim=1), temperature,
                     scaling)


def kd_kl_log(student_logits, log_pt, temperature, scaling="paper"):
    """:func:`kd_kl` given the teacher's log-softmax ``log_pt`` at ``temperature`` (computed once per
    batch and shared by the final head and every auxiliary head)."""
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    kl = (log_ps.exp() * (log_ps - log_pt)).sum(1).mean()
    return kl * (temperature * temperature) if check_kd_scaling(scaling) == "hinton" else kl
