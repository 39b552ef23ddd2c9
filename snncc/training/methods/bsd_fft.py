"""BSD's autoencoder losses (App. E.2.4): FFT-ReCo, ReCo on the low and high spatial-frequency bands, and the
reconstruction MSE of the top layer. Split from :mod:`snncc.training.methods.bsd`, whose ReCo they use."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from snncc.training.methods.bsd import flatten_time, reco_loss


# ---------------------------------------------------------------- FFT-ReCo (autoencoder, App. E.2.4)
def frequency_mask(h: int, w: int, cutoff: float, device=None) -> torch.Tensor:
    """Boolean (H, W) low-frequency mask in *unshifted* FFT order.

    The mask is a disc centred at the zero frequency of the fftshift-ed spectrum:
    with centred coordinates u = (k - H//2) / (H/2) and v = (l - W//2) / (W/2), both
    in [-1, 1), bin (k, l) is low-frequency iff sqrt(u^2 + v^2) <= cutoff. It is
    returned ifftshift-ed to match ``torch.fft.fft2`` output. The disc is symmetric
    under k -> -k, so the low part of a real signal is real.
    """
    u = (torch.arange(h, device=device, dtype=torch.float64) - h // 2) / (h / 2)
    v = (torch.arange(w, device=device, dtype=torch.float64) - w // 2) / (w / 2)
    centred = (u[:, None] ** 2 + v[None, :] ** 2).sqrt() <= cutoff + 1e-12
    return torch.fft.ifftshift(centred)


def fft_split(x: torch.Tensor, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high) spatial-domain parts of ``x`` (..., H, W); low + high == x.

    low = Re(ifft2(mask * fft2(x))), high = Re(ifft2((1 - mask) * fft2(x))).
    """
    h, w = x.shape[-2:]
    mask = frequency_mask(h, w, cutoff, x.device)
    spec = torch.fft.fft2(x)
    low = torch.fft.ifft2(spec * mask).real
    high = torch.fft.ifft2(spec * ~mask).real
    return low.to(x.dtype), high.to(x.dtype)


def fft_reco_loss(v: torch.Tensor, v_hat: torch.Tensor, cutoff: float, lam_low: float,
                  lam_high: float) -> torch.Tensor:
    """ReCo(low(v), low(v_hat), lam_low) + ReCo(high(v), high(v_hat), lam_high).

    ``v``/``v_hat`` are (T, B, C, H, W) currents (or (B, C, H, W)); each band is
    flattened per sample (T*C*H*W) before the cosine affinity. A band the mask
    leaves empty (e.g. the high band of a 1x1 map, or any cutoff >= sqrt(2))
    contributes 0 instead of ReCo's constant loss on all-zero vectors.
    """
    h, w = v.shape[-2:]
    mask = frequency_mask(h, w, cutoff)
    flat = flatten_time if v.dim() == 5 else (lambda t: t.reshape(t.shape[0], -1))
    v_lo, v_hi = fft_split(v, cutoff)
    t_lo, t_hi = fft_split(v_hat, cutoff)
    loss = v.new_zeros(())
    if bool(mask.any()):
        loss = loss + reco_loss(flat(v_lo), flat(t_lo), lam_low)
    if not bool(mask.all()):
        loss = loss + reco_loss(flat(v_hi), flat(t_hi), lam_high)
    return loss


def recon_mse(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error over pixels, summed over the batch (the top loss)."""
    return F.mse_loss(out, x, reduction="none").flatten(1).mean(1).sum()
