"""Batch augmentation in plain PyTorch (no torchvision), run on whatever device the batch is on.

All geometric changes of one image (random resized crop, flips, RandAugment's rotate / shear /
translate) are folded into one affine map per image and applied by a single `grid_sample`, so the
GPU augments a whole batch in a few kernels. Colour operations (brightness, contrast, saturation,
sharpness, posterize, solarize, autocontrast) are computed for the batch and kept per image by a mask.
Random numbers come from one CPU `torch.Generator`, whose state `state_dict()` saves for exact resume.

Also here: mixup / cutmix with label smoothing (`MixupCutmix`), random erasing, and normalization.
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F

from .settings import AugmentConfig

GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
COLOR_OPS = ("brightness", "contrast", "color", "sharpness", "posterize", "solarize", "autocontrast")
RANDAUGMENT_OPS = GEOMETRIC_OPS + COLOR_OPS


def to_float(images: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 in [0, 1], resized (bilinear) to `size` x `size` when it differs."""
    x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    if size is not None and x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def normalize(x: torch.Tensor, mean, std, channels: int | None = None) -> torch.Tensor:
    """(x - mean) / std per channel; a 1-channel batch is first repeated to `channels` when given.

    Args:
        x: float (B, C, H, W) in [0, 1].
        mean, std: one value per output channel.
    """
    if channels is not None and x.shape[1] != channels:
        if x.shape[1] != 1:
            raise ValueError(f"cannot turn {x.shape[1]}-channel images into {channels} channels.")
        x = x.expand(-1, channels, -1, -1)
    mean_t, std_t = _stats_tensors(tuple(float(v) for v in mean), tuple(float(v) for v in std), x.device, x.dtype)
    return (x - mean_t) / std_t


_STATS_CACHE: dict = {}


def _stats_tensors(mean: tuple, std: tuple, device: torch.device, dtype: torch.dtype):
    """Mean and std as (1, C, 1, 1) tensors on `device`, made once (no host-to-device copy per batch)."""
    key = (mean, std, str(device), dtype)
    if key not in _STATS_CACHE:
        _STATS_CACHE[key] = (torch.tensor(mean, dtype=dtype, device=device).view(1, -1, 1, 1),
                             torch.tensor(std, dtype=dtype, device=device).view(1, -1, 1, 1))
    return _STATS_CACHE[key]


def ship(params: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move small CPU tensors to `device` in one pinned, non-blocking copy (no stream synchronization)."""
    if device.type == "cpu" or not params:
        return params
    names = list(params)
    flat = [params[n].reshape(-1).float() for n in names]
    packed = torch.cat(flat).pin_memory().to(device, non_blocking=True)
    out, start = {}, 0
    for n, f in zip(names, flat):
        piece = packed[start:start + f.numel()].view(params[n].shape)
        out[n] = piece.bool() if params[n].dtype == torch.bool else piece
        start += f.numel()
    return out


class BatchAugment:
    """Random augmentation of a batch of images, reproducible from its generator state.

    Args:
        config: an `AugmentConfig`.
        seed: seed of the generator drawing every random parameter.

    Call with uint8 or float images (B, C, H, W); returns float32 (B, C, S, S) in [0, 1], S = image_size.

    Example:
        >>> aug = BatchAugment(AugmentConfig(image_size=32, randaugment_ops=2), seed=0)
        >>> aug(torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)).shape
        torch.Size([4, 3, 32, 32])
    """

    def __init__(self, config: AugmentConfig, seed: int = 0) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=self.generator)

    # ------------------------------------------------------------------------------------- call
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b = images.shape[0]
        x = to_float(images)
        ops = self._draw_ops(b)
        params = {"theta": (self._crop_and_flip(b) @ self._geometric(ops))[:, :2].contiguous()}
        params.update({k: v for k, v in ops.items() if k.split("_mask")[0] in COLOR_OPS})
        if cfg.random_erase > 0:
            params.update(self._erase_params(b))
        params = ship(params, x.device)
        grid = F.affine_grid(params["theta"], [b, x.shape[1], cfg.image_size, cfg.image_size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        x = self._color(x, params)
        if cfg.random_erase > 0:
            x = self._erase(x, params)
        return x.clamp_(0.0, 1.0)

    def _draw_ops(self, b: int) -> dict[str, torch.Tensor]:
        """Per op: the signed magnitude (B,) in [-1, 1] for images that apply it, 0 (and masked) otherwise."""
        cfg = self.config
        out: dict[str, torch.Tensor] = {}
        if cfg.randaugment_ops <= 0:
            return out
        chosen = torch.randint(0, len(RANDAUGMENT_OPS), (b, cfg.randaugment_ops), generator=self.generator)
        applied = self._rand(b, cfg.randaugment_ops) < cfg.randaugment_prob
        sign = torch.where(self._rand(b, cfg.randaugment_ops) < 0.5, -1.0, 1.0)
        level = cfg.randaugment_magnitude / 10.0
        for k, name in enumerate(RANDAUGMENT_OPS):
            hit = (chosen == k) & applied
            if hit.any():
                out[name] = (hit * sign).sum(1).clamp(-1, 1) * level
                out[name + "_mask"] = hit.any(1)
        return out

    def _crop_and_flip(self, b: int) -> torch.Tensor:
        """(B, 3, 3) maps from output to input coordinates ([-1, 1] each way) for crop and flips."""
        cfg = self.config
        sx, sy = torch.ones(b), torch.ones(b)
        cx, cy = torch.zeros(b), torch.zeros(b)
        if cfg.crop_scale is not None:
            tries = 10
            area = cfg.crop_scale[0] + (cfg.crop_scale[1] - cfg.crop_scale[0]) * self._rand(b, tries)
            lo, hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
            ratio = torch.exp(lo + (hi - lo) * self._rand(b, tries))
            w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
            ok = (w <= 1) & (h <= 1)
            first = torch.where(ok.any(1), ok.float().argmax(1), torch.zeros(b, dtype=torch.long))
            pick = torch.arange(b)
            w = torch.where(ok.any(1), w[pick, first], torch.ones(b))
            h = torch.where(ok.any(1), h[pick, first], torch.ones(b))
            cx = (1 - w) * (2 * self._rand(b) - 1)
            cy = (1 - h) * (2 * self._rand(b) - 1)
            sx, sy = w, h
        if cfg.hflip > 0:
            sx = torch.where(self._rand(b) < cfg.hflip, -sx, sx)
        if cfg.vflip > 0:
            sy = torch.where(self._rand(b) < cfg.vflip, -sy, sy)
        theta = torch.zeros(b, 3, 3)
        theta[:, 0, 0], theta[:, 0, 2] = sx, cx
        theta[:, 1, 1], theta[:, 1, 2] = sy, cy
        theta[:, 2, 2] = 1
        return theta

    def _geometric(self, ops: dict[str, torch.Tensor]) -> torch.Tensor:
        b = next(iter(ops.values())).shape[0] if ops else 1
        m = torch.eye(3).expand(b, 3, 3).clone()
        if "rotate" in ops:
            angle = ops["rotate"] * math.radians(30)
            c, s = torch.cos(angle), torch.sin(angle)
            rot = torch.eye(3).expand(b, 3, 3).clone()
            rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = c, -s, s, c
            m = m @ rot
        for name, (i, j) in (("shear_x", (0, 1)), ("shear_y", (1, 0))):
            if name in ops:
                shear = torch.eye(3).expand(b, 3, 3).clone()
                shear[:, i, j] = ops[name] * 0.3
                m = m @ shear
        for name, i in (("translate_x", 0), ("translate_y", 1)):
            if name in ops:
                m[:, i, 2] += ops[name] * 0.45 * 2  # fraction of the side, in [-1, 1] coordinates
        return m

    def _color(self, x: torch.Tensor, ops: dict[str, torch.Tensor]) -> torch.Tensor:
        def where(name: str, changed: torch.Tensor) -> torch.Tensor:
            mask = ops[name + "_mask"].to(x.device).view(-1, 1, 1, 1)
            return torch.where(mask, changed, x)

        def factor(name: str) -> torch.Tensor:
            return (1.0 + 0.9 * ops[name]).to(x.device).view(-1, 1, 1, 1)

        gray = None
        if "brightness" in ops:
            x = where("brightness", x * factor("brightness"))
        if "contrast" in ops:
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = where("contrast", mean + (x - mean) * factor("contrast"))
        if "color" in ops and x.shape[1] == 3:
            gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
            x = where("color", gray + (x - gray) * factor("color"))
        if "sharpness" in ops:
            c = x.shape[1]
            kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
            kernel[1, 1] = 5.0  # a fill on the device, no host-to-device copy
            kernel = kernel / 13
            blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel.expand(c, 1, 3, 3), groups=c)
            x = where("sharpness", blurred + (x - blurred) * factor("sharpness"))
        if "posterize" in ops:
            bits = (8 - 4 * ops["posterize"].abs()).round().to(x.device).view(-1, 1, 1, 1)
            levels = torch.pow(2.0, bits)
            x = where("posterize", torch.floor(x.clamp(0, 1) * 255 / (256 / levels)) * (256 / levels) / 255)
        if "solarize" in ops:
            threshold = (1.0 - ops["solarize"].abs()).to(x.device).view(-1, 1, 1, 1)
            x = where("solarize", torch.where(x >= threshold, 1.0 - x, x))
        if "autocontrast" in ops:
            lo = x.amin(dim=(2, 3), keepdim=True)
            hi = x.amax(dim=(2, 3), keepdim=True)
            scale = torch.where(hi > lo, 1.0 / (hi - lo).clamp_min(1e-6), torch.ones_like(hi))
            x = where("autocontrast", (x - lo) * scale)
        del gray
        return x

    def _erase_params(self, b: int) -> dict[str, torch.Tensor]:
        do = self._rand(b) < self.config.random_erase
        area = 0.02 + (1 / 3 - 0.02) * self._rand(b)
        ratio = torch.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * self._rand(b))
        eh = torch.sqrt(area / ratio).clamp(max=1.0)
        ew = torch.sqrt(area * ratio).clamp(max=1.0)
        top, left = (1 - eh) * self._rand(b), (1 - ew) * self._rand(b)
        return {"erase_do": do, "erase_h": eh, "erase_w": ew, "erase_top": top, "erase_left": left}

    def _erase(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        _, _, h, w = x.shape
        do, eh, ew, top, left = p["erase_do"], p["erase_h"], p["erase_w"], p["erase_top"], p["erase_left"]
        ys = (torch.arange(h, device=x.device) + 0.5) / h
        xs = (torch.arange(w, device=x.device) + 0.5) / w
        dev = lambda t: t.to(x.device).view(-1, 1, 1)  # noqa: E731
        inside = ((ys.view(1, -1, 1) >= dev(top)) & (ys.view(1, -1, 1) < dev(top + eh))
                  & (xs.view(1, 1, -1) >= dev(left)) & (xs.view(1, 1, -1) < dev(left + ew)) & dev(do))
        return x.masked_fill(inside[:, None], 0.0)


def one_hot(labels: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Smoothed one-hot targets (B, num_classes): 1 - smoothing + smoothing/K on the label, smoothing/K elsewhere."""
    off = smoothing / num_classes
    out = torch.full((labels.shape[0], num_classes), off, device=labels.device)
    return out.scatter_(1, labels.view(-1, 1), 1.0 - smoothing + off)


class MixupCutmix:
    """Mixup and CutMix on a batch, producing soft targets (with label smoothing).

    Each batch is mixed with probability `prob`; then CutMix is chosen with probability `switch_prob`
    when both alphas are positive. One mixing weight per batch, partner = the batch reversed.

    Args:
        num_classes: K of the targets.
        mixup_alpha / cutmix_alpha: Beta(alpha, alpha) of the mixing weight (0 disables each).
        prob: probability of mixing a batch.
        switch_prob: probability of CutMix when both are on.
        smoothing: label smoothing of the one-hot targets.
        seed: seed of the generator (saved by `state_dict()`).

    Example:
        >>> mix = MixupCutmix(10, mixup_alpha=0.8, cutmix_alpha=1.0, seed=0)
        >>> x, y = mix(torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
        >>> y.shape, float(y.sum(1)[0])
        (torch.Size([4, 10]), 1.0)
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
                 switch_prob: float = 0.5, smoothing: float = 0.0, seed: int = 0) -> None:
        self.num_classes, self.mixup_alpha, self.cutmix_alpha = num_classes, mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.smoothing = prob, switch_prob, smoothing
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def _beta(self, alpha: float) -> float:
        # Beta(a, a) from two Gamma draws made with our own generator (torch's Beta takes no generator)
        u = torch._standard_gamma(torch.full((2,), float(alpha)), generator=self.generator) \
            if hasattr(torch, "_standard_gamma") else None
        if u is None or not torch.isfinite(u).all() or float(u.sum()) == 0:
            return float(torch.rand((), generator=self.generator))
        return float(u[0] / u.sum())

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: x float (B, C, H, W); labels int64 (B,). Returns mixed x and targets float (B, K)."""
        target = one_hot(labels, self.num_classes, self.smoothing)
        draws = torch.rand(3, generator=self.generator)  # always three draws: a fixed stream per batch
        if not self.active or float(draws[0]) >= self.prob:
            return x, target
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or float(draws[1]) < self.switch_prob)
        lam = self._beta(self.cutmix_alpha if use_cutmix else self.mixup_alpha)
        if use_cutmix:
            h, w = x.shape[-2:]
            cut = math.sqrt(1.0 - lam)
            ch, cw = int(h * cut), int(w * cut)
            cy = torch.randint(0, h, (1,), generator=self.generator)
            cx = torch.randint(0, w, (1,), generator=self.generator)
            y0, y1 = max(int(cy) - ch // 2, 0), min(int(cy) + ch // 2, h)
            x0, x1 = max(int(cx) - cw // 2, 0), min(int(cx) + cw // 2, w)
            x = x.clone()
            x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
            lam = 1.0 - (y1 - y0) * (x1 - x0) / float(h * w)
        else:
            x = x * lam + x.flip(0) * (1.0 - lam)
        return x, target * lam + target.flip(0) * (1.0 - lam)
