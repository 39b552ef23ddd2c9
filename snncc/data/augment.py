"""RandAugment (Cubuk et al., NeurIPS 2020) on batched image tensors, without torchvision.

The BSD paper trains with RandAugment (App. E.2.1: every MLP dataset; App. E.2.2:
the CNNs with magnitude 4 on MNIST, FashionMNIST, CIFAR-10/100; App. E.2.3: the
CIFAR-10 autoencoder). torchvision cannot be installed next to snncc's pinned torch,
so this module re-implements its ``RandAugment`` for float images (B, C, H, W) in
[0, 1], as the data layer yields them:

* ``N`` rounds; in each, every image draws one op uniformly from the op set and,
  for signed ops, a random sign (per-sample choices from a seeded
  ``torch.Generator``, so a run is reproducible);
* every op uses the same magnitude bin ``M`` on torchvision's 0..30 scale
  (``num_magnitude_bins=31``), mapped to op strengths as torchvision does:

  ========================  =======================================  ======
  op                        strength at bin M (of 30)                signed
  ========================  =======================================  ======
  identity                  --                                       --
  shear_x / shear_y         0.3 * M/30 (shear factor)                yes
  translate_x / _y          int(150/331 * W (or H) * M/30) pixels    yes
  rotate                    30 * M/30 degrees                        yes
  brightness                factor 1 + 0.9 * M/30                    yes
  color (RGB only)          factor 1 + 0.9 * M/30                    yes
  contrast                  factor 1 + 0.9 * M/30                    yes
  sharpness                 factor 1 + 0.9 * M/30                    yes
  posterize                 keep 8 - round(M/7.5) bits               no
  solarize                  threshold 1 - M/30                       no
  autocontrast, equalize    --                                       --
  ========================  =======================================  ======

Op definitions (torchvision / PIL semantics on [0, 1] floats; geometric ops use
nearest-neighbour sampling with zero fill, as torchvision's RandAugment default):

* shear_x(m): out(x, y) = in(x + m*y, y); shear_y(m): out(x, y) = in(x, y + m*x)
  (pixel indices; sheared about the top-left pixel like torchvision's center=[0, 0]);
* translate_x(d): out(x, y) = in(x - d, y) (content moves right by d pixels); _y alike;
* rotate(a): counter-clockwise by a degrees about the image centre
  (rotate(90) of a square image is ``torch.rot90(img, 1, (-2, -1))``);
* brightness(f) = clip(f*img); contrast(f) = clip(f*img + (1-f)*mean(gray(img)))
  per image; color(f) = clip(f*img + (1-f)*gray(img)), gray = 0.2989 R + 0.587 G
  + 0.114 B; sharpness(f) = clip(f*img + (1-f)*blur(img)), blur = the 3x3 kernel
  [[1,1,1],[1,5,1],[1,1,1]]/13 on interior pixels, border pixels kept;
* posterize(b): keep the top b bits of the 8-bit value (x*255 rounded);
  solarize(t): 1 - x where x >= t; autocontrast: per image and channel, map
  [min, max] linearly onto [0, 1] (unchanged where min == max); equalize: PIL's
  histogram equalisation of the 8-bit values per image and channel.

Colour (saturation) is an identity on one channel, so grayscale images draw from
the 13 other ops and RGB images from all 14.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NUM_BINS = 31  # magnitude bins 0..30 (torchvision's num_magnitude_bins)
MAX_MAGNITUDE = NUM_BINS - 1
MAX_OPS = 10  # upper bound accepted for N (the RandAugment paper searches N in 1..3)
DEFAULT_N = 2  # torchvision's num_ops and the RandAugment paper's common setting
GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
OPS_RGB = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness", "color",
           "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
OPS_GRAY = tuple(op for op in OPS_RGB if op != "color")
SIGNED = frozenset(GEOMETRIC + ("brightness", "color", "contrast", "sharpness"))
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)


def op_names(channels: int) -> tuple:
    """The op set for images with ``channels`` channels (colour only for RGB)."""
    return OPS_RGB if channels == 3 else OPS_GRAY


def op_strength(op: str, magnitude: int, height: int, width: int) -> float:
    """The unsigned strength of ``op`` at magnitude bin ``magnitude`` (0..30), per the module table."""
    frac = magnitude / MAX_MAGNITUDE
    if op in ("shear_x", "shear_y"):
        return 0.3 * frac
    if op == "translate_x":
        return float(int(150.0 / 331.0 * width * frac))
    if op == "translate_y":
        return float(int(150.0 / 331.0 * height * frac))
    if op == "rotate":
        return 30.0 * frac
    if op in ("brightness", "color", "contrast", "sharpness"):
        return 0.9 * frac
    if op == "posterize":
        return float(8 - round(magnitude / (MAX_MAGNITUDE / 4)))
    if op == "solarize":
        return 1.0 - frac
    if op in ("identity", "autocontrast", "equalize"):
        return 0.0
    raise ValueError(f"unknown RandAugment op {op!r}")


# ---------------------------------------------------------------- geometric ops
def _per_sample(value, n: int, like: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) strength as a (B,) tensor of ``like``'s dtype and device."""
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return t.expand(n) if t.dim() == 0 else t


def affine(img: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Resample (B, C, H, W) images: out(p) = in(matrix @ p + offset), nearest, zero fill.

    ``p`` are pixel coordinates relative to the image centre ((W-1)/2, (H-1)/2),
    x to the right and y down; ``matrix`` (B, 2, 2), ``offset`` (B, 2) in pixels.
    """
    b, _, h, w = img.shape
    theta = torch.empty(b, 2, 3, dtype=img.dtype, device=img.device)
    # centred pixel coordinates are normalised ones (align_corners=False) scaled by (W/2, H/2)
    theta[:, 0, 0] = matrix[:, 0, 0]
    theta[:, 0, 1] = matrix[:, 0, 1] * (h / w)
    theta[:, 1, 0] = matrix[:, 1, 0] * (w / h)
    theta[:, 1, 1] = matrix[:, 1, 1]
    theta[:, 0, 2] = offset[:, 0] * (2.0 / w)
    theta[:, 1, 2] = offset[:, 1] * (2.0 / h)
    grid = F.affine_grid(theta, list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _eye(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, dtype=like.dtype, device=like.device).repeat(n, 1, 1)


def shear_x(img: torch.Tensor, m) -> torch.Tensor:
    """out(x, y) = in(x + m*y, y) in pixel indices (m: scalar or per-sample (B,))."""
    b, _, h, w = img.shape
    m = _per_sample(m, b, img)
    mat, off = _eye(b, img), torch.zeros(b, 2, dtype=img.dtype, device=img.device)
    mat[:, 0, 1] = m
    off[:, 0] = m * (h - 1) / 2  # shear about row 0, not the centre row
    return affine(img, mat, off)


def shear_y(img: torch.Tensor, m) -> torch.Tensor:
    """out(x, y) = in(x, y + m*x) in pixel indices."""
    b, _, h, w = img.shape
    m = _per_sample(m, b, img)
    mat, off = _eye(b, img), torch.zeros(b, 2, dtype=img.dtype, device=img.device)
    mat[:, 1, 0] = m
    off[:, 1] = m * (w - 1) / 2
    return affine(img, mat, off)


def translate(img: torch.Tensor, dx, dy) -> torch.Tensor:
    """out(x, y) = in(x - dx, y - dy): content moves dx pixels right and dy down."""
    b = img.shape[0]
    off = torch.stack([-_per_sample(dx, b, img), -_per_sample(dy, b, img)], dim=1)
    return affine(img, _eye(b, img), off)


def rotate(img: torch.Tensor, degrees) -> torch.Tensor:
    """Counter-clockwise rotation (as displayed, y down) about the image centre."""
    b = img.shape[0]
    a = torch.deg2rad(_per_sample(degrees, b, img).double())
    cos, sin = torch.cos(a).to(img.dtype), torch.sin(a).to(img.dtype)
    mat = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    return affine(img, mat, torch.zeros(b, 2, dtype=img.dtype, device=img.device))


# ---------------------------------------------------------------- photometric ops
def _factor(f, img: torch.Tensor) -> torch.Tensor:
    return _per_sample(f, img.shape[0], img).view(-1, 1, 1, 1)


def blend(img: torch.Tensor, other: torch.Tensor, factor) -> torch.Tensor:
    """clip(f*img + (1-f)*other, 0, 1) (torchvision's _blend)."""
    f = _factor(factor, img)
    return (f * img + (1.0 - f) * other).clamp(0.0, 1.0)


def grayscale(img: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luminance (the image itself for one channel)."""
    if img.shape[1] == 1:
        return img
    r, g, b = img.unbind(1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b).unsqueeze(1)


def brightness(img: torch.Tensor, factor) -> torch.Tensor:
    return blend(img, torch.zeros_like(img), factor)


def contrast(img: torch.Tensor, factor) -> torch.Tensor:
    return blend(img, grayscale(img).mean(dim=(1, 2, 3), keepdim=True), factor)


def color(img: torch.Tensor, factor) -> torch.Tensor:
    return blend(img, grayscale(img), factor)


def sharpness(img: torch.Tensor, factor) -> torch.Tensor:
    c = img.shape[1]
    kernel = torch.ones(3, 3, dtype=img.dtype, device=img.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    degenerate = img.clone()
    if img.shape[-1] > 2 and img.shape[-2] > 2:
        degenerate[..., 1:-1, 1:-1] = F.conv2d(img, kernel, groups=c)
    return blend(img, degenerate, factor)


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats -> their 8-bit values (int64) as the dataset decoded them."""
    return (img.clamp(0.0, 1.0) * 255.0).round().long()


def posterize(img: torch.Tensor, bits) -> torch.Tensor:
    """Keep the top ``bits`` bits of every 8-bit value."""
    b = _per_sample(bits, img.shape[0], img).round().long().view(-1, 1, 1, 1)
    mask = (255 >> (8 - b)) << (8 - b)
    return (to_uint8(img) & mask).to(img.dtype) / 255.0


def solarize(img: torch.Tensor, threshold) -> torch.Tensor:
    t = _factor(threshold, img)
    return torch.where(img >= t, 1.0 - img, img)


def autocontrast(img: torch.Tensor) -> torch.Tensor:
    lo = img.amin(dim=(-2, -1), keepdim=True)
    hi = img.amax(dim=(-2, -1), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).masked_fill(flat, 1.0))
    lo = lo.masked_fill(flat, 0.0)
    return ((img - lo) * scale).clamp(0.0, 1.0)


def equalize(img: torch.Tensor) -> torch.Tensor:
    """PIL's ImageOps.equalize on the 8-bit values of every image and channel."""
    b, c, h, w = img.shape
    q = to_uint8(img).reshape(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=img.device).scatter_add_(1, q, torch.ones_like(q))
    top_count = hist.gather(1, q.amax(1, keepdim=True))  # pixels in the highest occupied bin
    step = (h * w - top_count) // 255  # (B*C, 1); 0 for a single grey level or too few pixels
    safe = step.clamp(min=1)
    lut = (torch.cumsum(hist, 1) + safe // 2) // safe
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], 1).clamp(0, 255)
    out = torch.where(step > 0, lut.gather(1, q), q)
    return (out.to(img.dtype) / 255.0).reshape(b, c, h, w)


# ---------------------------------------------------------------- the policy
def apply_op(op: str, img: torch.Tensor, strength) -> torch.Tensor:
    """Apply ``op`` with per-sample (signed) ``strength`` (B,) to a (B, C, H, W) batch."""
    if op == "identity":
        return img
    if op == "shear_x":
        return shear_x(img, strength)
    if op == "shear_y":
        return shear_y(img, strength)
    if op == "translate_x":
        return translate(img, strength, 0.0)
    if op == "translate_y":
        return translate(img, 0.0, strength)
    if op == "rotate":
        return rotate(img, strength)
    if op in ("brightness", "color", "contrast", "sharpness"):
        return {"brightness": brightness, "color": color, "contrast": contrast,
                "sharpness": sharpness}[op](img, 1.0 + strength)
    if op == "posterize":
        return posterize(img, strength)
    if op == "solarize":
        return solarize(img, strength)
    if op == "autocontrast":
        return autocontrast(img)
    if op == "equalize":
        return equalize(img)
    raise ValueError(f"unknown RandAugment op {op!r}")


class RandAugment:
    """``num_ops`` random ops per image at magnitude bin ``magnitude`` (0..30).

    ``augment(x, generator)`` returns a new (B, C, H, W) batch in [0, 1]; every
    random choice comes from ``generator``.
    """

    def __init__(self, num_ops: int = DEFAULT_N, magnitude: int = 9):
        if not isinstance(num_ops, int) or not 1 <= num_ops <= MAX_OPS:
            raise ValueError(f"RandAugment N must be an integer in 1..{MAX_OPS}, got {num_ops!r}")
        if not isinstance(magnitude, int) or not 0 <= magnitude <= MAX_MAGNITUDE:
            raise ValueError(f"RandAugment M must be an integer in 0..{MAX_MAGNITUDE}, got {magnitude!r}")
        self.num_ops, self.magnitude = num_ops, magnitude

    def __repr__(self) -> str:
        return f"RandAugment(N={self.num_ops}, M={self.magnitude})"

    def choices(self, batch: int, channels: int, generator: torch.Generator):
        """The per-round (op index (B,), sign (B,)) draws, in the order ``__call__`` uses them."""
        ops = op_names(channels)
        return [(torch.randint(len(ops), (batch,), generator=generator),
                 torch.randint(2, (batch,), generator=generator) * 2 - 1) for _ in range(self.num_ops)]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"RandAugment expects (B, C, H, W) images, got shape {tuple(x.shape)}")
        b, c, h, w = x.shape
        ops = op_names(c)
        for op_idx, sign in self.choices(b, c, generator):
            out = x.clone()
            for k, op in enumerate(ops):
                rows = (op_idx == k).nonzero().flatten()
                if len(rows) == 0 or op == "identity":
                    continue
                s = op_strength(op, self.magnitude, h, w)
                strength = sign[rows].to(x.dtype) * s if op in SIGNED else torch.full((len(rows),), s, dtype=x.dtype)
                out[rows] = apply_op(op, x[rows], strength.to(x.device))
            x = out
        return x


__all__ = ["DEFAULT_N", "MAX_MAGNITUDE", "MAX_OPS", "NUM_BINS", "OPS_GRAY", "OPS_RGB", "RandAugment", "affine",
           "apply_op", "autocontrast", "blend", "brightness", "color", "contrast", "equalize", "grayscale",
           "op_names", "op_strength", "posterize", "rotate", "sharpness", "shear_x", "shear_y", "solarize",
           "to_uint8", "translate"]
