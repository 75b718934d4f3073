"""The ops behind `frugalml.data.augment`: per-sample affine warps and RandAugment's 14 ops, batched.

Every op takes a sub-batch and one magnitude per sample, so a batch where each sample drew its own
op costs one call per op, not one per sample. Photometric ops work in [0, 1] pixel units (mapped from
the normalized values with each sample's black/white level) so magnitudes mean what they mean in
PIL/torchvision; geometric ops pad with the normalized black level.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

# RandAugment's op set (Cubuk et al. 2020, as in torchvision) with its maxima at magnitude 30
MAX_ROTATE_DEG = 30.0
MAX_SHEAR = 0.3  # shear factor
MAX_TRANSLATE = 0.45  # fraction of the size (torchvision: 150/331)
MAX_ENHANCE = 0.9  # brightness/contrast/color/sharpness factor 1 +- 0.9
MAX_POSTERIZE_DROP = 4  # bits removed at the top magnitude (8 -> 4)


def _eye(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(3, device=device).repeat(n, 1, 1)


def affine_from(angle_deg: torch.Tensor, scale: torch.Tensor, shear_x: torch.Tensor, shear_y: torch.Tensor,
                tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) `affine_grid` matrices (output -> input coordinates) for per-sample rotations,
    zooms, shears and shifts (tx, ty as fractions of the image size)."""
    n, dev = angle_deg.shape[0], angle_deg.device
    a = angle_deg * math.pi / 180
    fwd = _eye(n, dev)
    fwd[:, 0, 0], fwd[:, 0, 1] = torch.cos(a) * scale, -torch.sin(a) * scale
    fwd[:, 1, 0], fwd[:, 1, 1] = torch.sin(a) * scale, torch.cos(a) * scale
    shear = _eye(n, dev)
    shear[:, 0, 1], shear[:, 1, 0] = shear_x, shear_y
    fwd = fwd @ shear
    fwd[:, 0, 2], fwd[:, 1, 2] = 2 * tx, 2 * ty  # normalized coordinates span 2 per image side
    return torch.linalg.inv(fwd)[:, :2, :]


def affine_matrices(n: int, g: torch.Generator, *, rotate: float = 0.0, scale: tuple[float, float] | None = None,
                    translate: float = 0.0, shear: float = 0.0) -> torch.Tensor:
    """Random per-sample affine matrices: angle in [-rotate, rotate], zoom in `scale`, shift up to
    `translate` of the size on each axis, shear angle in [-shear, shear] degrees."""
    def sym(limit: float) -> torch.Tensor:
        return (2 * torch.rand(n, generator=g) - 1) * limit

    lo, hi = scale or (1.0, 1.0)
    zoom = lo + (hi - lo) * torch.rand(n, generator=g)
    shx = torch.tan(sym(shear) * math.pi / 180)
    return affine_from(sym(rotate), zoom, shx, torch.zeros(n), sym(translate), sym(translate))


def apply_affine(x: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    # grid_sample pads with zeros: shift so that zero is the fill value, then shift back
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def unit_range(x: torch.Tensor, value_range: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (N, 1, 1, 1) black and white levels: the given ones, or each image's min and max."""
    if value_range is not None:
        lo = torch.full((x.shape[0], 1, 1, 1), float(value_range[0]), device=x.device, dtype=x.dtype)
        return lo, lo + (float(value_range[1]) - float(value_range[0]))
    flat = x.flatten(1)
    lo, hi = flat.min(1).values, flat.max(1).values
    hi = torch.where(hi - lo > 1e-6, hi, lo + 1.0)  # a constant image: any scale will do
    return lo.view(-1, 1, 1, 1), hi.view(-1, 1, 1, 1)


# --- photometric ops on u in [0, 1]; m in [0, 1] (magnitude / 30), s = +-1 ------------------------------

def _grey(u: torch.Tensor) -> torch.Tensor:
    if u.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114], device=u.device, dtype=u.dtype).view(1, 3, 1, 1)
        return (u * w).sum(1, keepdim=True)
    return u.mean(1, keepdim=True)


def _blend(base: torch.Tensor, u: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return base + factor * (u - base)


def _autocontrast(u: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    lo = u.amin(dim=(2, 3), keepdim=True)
    hi = u.amax(dim=(2, 3), keepdim=True)
    return torch.where(hi - lo > 1e-6, (u - lo) / (hi - lo).clamp_min(1e-6), u)


def _equalize(u: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    n, c, h, w = u.shape
    level = (u * 255).round().long().clamp(0, 255).view(n, c, h * w)
    hist = torch.zeros(n, c, 256, device=u.device).scatter_add_(2, level, torch.ones_like(level, dtype=torch.float))
    cdf = hist.cumsum(-1)
    cdf_min = cdf.gather(2, level.amin(-1, keepdim=True))  # count at the darkest level present
    out = (cdf.gather(2, level) - cdf_min) / (h * w - cdf_min).clamp_min(1)
    return out.view(n, c, h, w).to(u.dtype)


def _solarize(u: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.where(u >= 1 - m, 1 - u, u)


def _posterize(u: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    step = 2.0 ** (MAX_POSTERIZE_DROP * m).floor()
    return torch.floor(u * 255 / step) * step / 255


def _color(u: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return _blend(_grey(u), u, 1 + MAX_ENHANCE * m * s) if u.shape[1] == 3 else u


def _contrast(u: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return _blend(_grey(u).mean(dim=(2, 3), keepdim=True), u, 1 + MAX_ENHANCE * m * s)


def _brightness(u: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return u * (1 + MAX_ENHANCE * m * s)


def _sharpness(u: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    c = u.shape[1]
    kernel = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], device=u.device, dtype=u.dtype) / 13
    blurred = F.conv2d(F.pad(u, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
    return _blend(blurred, u, 1 + MAX_ENHANCE * m * s)


def _identity(u: torch.Tensor, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return u


PHOTOMETRIC: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "identity": _identity, "autocontrast": _autocontrast, "equalize": _equalize, "solarize": _solarize,
    "color": _color, "posterize": _posterize, "contrast": _contrast, "brightness": _brightness,
    "sharpness": _sharpness,
}


def _geometric(name: str, m: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    k = m * s
    zero, one = torch.zeros_like(k), torch.ones_like(k)
    if name == "rotate":
        return affine_from(MAX_ROTATE_DEG * k, one, zero, zero, zero, zero)
    if name == "shear_x":
        return affine_from(zero, one, MAX_SHEAR * k, zero, zero, zero)
    if name == "shear_y":
        return affine_from(zero, one, zero, MAX_SHEAR * k, zero, zero)
    if name == "translate_x":
        return affine_from(zero, one, zero, zero, MAX_TRANSLATE * k, zero)
    return affine_from(zero, one, zero, zero, zero, MAX_TRANSLATE * k)  # translate_y


GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
OPS = (*PHOTOMETRIC, *GEOMETRIC)


def rand_augment(x: torch.Tensor, g: torch.Generator, n_ops: int, magnitude: int | None,
                 lo: torch.Tensor, hi: torch.Tensor, fill: float) -> torch.Tensor:
    """`n_ops` rounds; in each, every sample draws one op from OPS and a sign; the magnitude is
    `magnitude`/30 for all, or (None) uniform per sample (TrivialAugment, FixMatch's RandAugment)."""
    n = x.shape[0]
    out = x.clone()
    for _ in range(n_ops):
        op = torch.randint(0, len(OPS), (n,), generator=g)
        mag = torch.rand(n, generator=g) if magnitude is None else torch.full((n,), magnitude / 30.0)
        sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
        for k, name in enumerate(OPS):
            idx = (op == k).nonzero().flatten()
            if len(idx) == 0 or name == "identity":
                continue
            m, s = mag[idx].to(x.device, x.dtype), sign[idx].to(x.device, x.dtype)
            sub = out[idx.to(x.device)]
            if name in GEOMETRIC:
                sub = apply_affine(sub, _geometric(name, m, s), fill)
            else:
                l_, h_ = lo[idx.to(x.device)], hi[idx.to(x.device)]
                u = ((sub - l_) / (h_ - l_)).clamp(0, 1)
                u = PHOTOMETRIC[name](u, m.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)).clamp(0, 1)
                sub = u * (h_ - l_) + l_
            out[idx.to(x.device)] = sub
    return out
