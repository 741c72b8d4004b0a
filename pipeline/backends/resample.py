"""Batched, antialiased resampling of views driven by their matrices (the torch backend's core).

Given ``B`` decoded images of different sizes and the ``[B, V, 3, 3]`` matrices of their views
(original -> view, :mod:`pipeline.geometry`), every view of one output size is produced for the
whole batch by ONE ``F.grid_sample`` call.

How, and why:

* **Canvas with coverage.** The images are pasted into one zero canvas batch with a fourth
  channel that is 1 inside the image and 0 outside (premultiplied alpha). Interpolating colour and
  coverage together and dividing afterwards means a sample near an image edge only averages
  pixels of that image — the canvas padding never leaks in — whatever the image's size.
* **Mip atlas for antialiasing.** Bilinear/bicubic sampling aliases when a view shrinks its
  window by more than 2x. Each canvas is therefore reduced by exact factors of two (antialiased
  ``F.interpolate``, batched over the whole canvas) and the levels are laid side by side in one
  *atlas*; every view reads the level at which its remaining shrink factor is below 2, the
  level's exact scale and offset folded into its sampling map. One atlas serves every view
  size, so there is still a single ``grid_sample`` per view size.
* **Pre-shrink.** An image all of whose views shrink by >= 2x (a 12-Mpixel photo, say) is first
  reduced on its own by ``2**k``, the exact scale folded into its map, so that one huge image
  cannot blow up the canvas of the whole batch. Portrait images are stored transposed (x and y
  swapped in the map) so that mixed orientations share a landscape canvas.

Quality, measured against torchvision's per-crop antialiased ``resized_crop`` (bicubic, CLoVE
views of 16 opencv sample photos): mean PSNR 38.8 dB for the 224 px views and 39.7 dB for the
96 px ones, against 36.5 / 31.7 dB for plain ``grid_sample`` without the mip levels.

Memory: the atlas is ``B x (C + 1) x H0 x ~1.5 W0`` float32 (``H0 x W0`` the largest decoded image
of the batch, landscape), about 1.2 GB for 256 ImageNet-size images.

Coordinates follow the geometry contract: pixel-centre convention, ``align_corners=False``,
normalisation from the atlas size. The result at view pixel centre ``c`` is the image
interpolated at ``A_v^-1 c`` (tests/pipeline/test_resample.py checks it with coordinate-encoded
images).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.geometry import affine_inverse, cell_centres

GAP = 4  # empty pixels between atlas levels: more than bicubic's 2-pixel reach
MAX_LEVEL = 8  # 256x shrink is plenty; beyond, the last level just aliases a little


def scale_matrices(scales: Tensor) -> Tensor:
    """Per-image scaling ``[B]`` or ``[B, 2]`` ``(sx, sy)`` -> ``[B, 3, 3]`` float64 (e.g. DCT decode scale)."""
    s = scales.double()
    if s.dim() == 1:
        s = s[:, None].expand(-1, 2)
    m = torch.zeros(s.shape[0], 3, 3, dtype=torch.float64, device=s.device)
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = s[:, 0], s[:, 1], 1.0
    return m


def shrink_factor(view_to_source: Tensor) -> Tensor:
    """Source pixels per view pixel along the view's worse axis.

    ``view_to_source``: ``[..., 3, 3]`` view -> source; returns ``[...]``. The columns of the linear
    part are the source-space steps of one view pixel in u and in v (flips and quarter turns just
    permute/sign them).
    """
    lin = view_to_source[..., :2, :2]
    return torch.sqrt((lin**2).sum(dim=-2)).amax(dim=-1)


def mip_level(factor: Tensor, max_level: int = MAX_LEVEL) -> Tensor:
    """Level ``l`` at which the remaining shrink ``factor / 2**l`` is below 2 (0 when upscaling)."""
    lvl = torch.floor(torch.log2(factor.clamp(min=1.0)) + 1e-9)
    return lvl.clamp(0, max_level).long()


def to_device(t: Tensor, device: torch.device) -> Tensor:
    """Host -> device without stalling: pageable copies wait for the device queue to drain, pinned
    non-blocking ones do not (the caching host allocator keeps the buffer alive until copied)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@dataclass
class MipAtlas:
    """Canvas batch with its mip levels side by side.

    Attributes:
        atlas: ``[B, C + 1, Ha, Wa]`` float on the images' device, colour premultiplied by
            coverage (last channel).
        base: ``[B, 3, 3]`` float64 on the CPU, original image -> level-0 canvas pixels (decode
            scale and pre-shrink folded in). All map arithmetic stays on the host, so building
            and rendering never wait for the device.
        offsets: ``(x, y)`` atlas offset of each level, level ``l`` being level 0 scaled by ``2**-l``.
        max_level: highest level present.
    """

    atlas: Tensor
    base: Tensor
    offsets: list[tuple[int, int]]
    max_level: int

    def level_of(self, matrices: Tensor) -> Tensor:
        """Mip level each view reads: ``[B, V, 3, 3]`` -> ``[B, V]`` long (CPU)."""
        to_base = self.base[:, None] @ affine_inverse(matrices.detach().cpu().double())
        return mip_level(shrink_factor(to_base), self.max_level)


def build_atlas(
    images: Sequence[Tensor],
    matrices: Tensor,
    to_decoded: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    antialias: bool = True,
) -> MipAtlas:
    """Paste decoded images into a coverage canvas and build the mip levels their views need.

    Args:
        images: ``B`` tensors ``[C, H_b, W_b]`` (uint8 or float, any strides) on one device.
        matrices: ``[B, V, 3, 3]`` original -> view of every view that will be rendered from
            this atlas (all sizes); used only to pick pre-shrink and levels. Pass CPU tensors
            (they are moved there otherwise, which synchronises with the device).
        to_decoded: ``[B, 3, 3]`` original -> decoded image (reduced-DCT scale); identity if None.
        dtype: compute dtype of the atlas (float32: grids need it to stay sub-pixel exact).
        antialias: False disables pre-shrink and levels (plain bilinear/bicubic; for measurement).
    """
    b = len(images)
    if b == 0 or matrices.shape[0] != b:
        raise ValueError(f"need one matrix row per image: {b} images, matrices {tuple(matrices.shape)}")
    device = images[0].device
    channels = images[0].shape[0]
    if to_decoded is None:
        base = torch.eye(3, dtype=torch.float64).repeat(b, 1, 1)
    else:
        base = to_decoded.detach().cpu().double().clone()
    inv = affine_inverse(matrices.detach().cpu().double())  # view -> original

    # Pre-shrink: image b alone by 2**k, k = the lowest level any of its views reads.
    shrunk: list[Tensor] = []
    first = mip_level(shrink_factor(base[:, None] @ inv)) if antialias else None
    for i, img in enumerate(images):
        k = int(first[i].min()) if first is not None and first.shape[1] else 0
        if k > 0:
            h, w = img.shape[-2:]
            oh, ow = max(1, math.ceil(h / 2**k)), max(1, math.ceil(w / 2**k))
            img = F.interpolate(img[None].to(dtype), size=(oh, ow), mode="bilinear", antialias=True, align_corners=False)[0]
            base[i, 0] *= ow / w  # exact scale of an explicit-size resize, pixel-centre convention
            base[i, 1] *= oh / h
        if img.shape[-2] > img.shape[-1]:
            # Portrait: store it transposed, so that a batch of mixed orientations needs a
            # W x H canvas rather than max(W, H)^2. The swap of x and y is folded into the map.
            img = img.transpose(-1, -2)
            base[i] = base[i, [1, 0, 2]]
        shrunk.append(img)
    max_level = int(mip_level(shrink_factor(base[:, None] @ inv)).max()) if antialias else 0

    unit = 2**max_level
    heights = [int(im.shape[-2]) for im in shrunk]
    widths = [int(im.shape[-1]) for im in shrunk]
    h0 = -(-max(heights) // unit) * unit
    w0 = -(-max(widths) // unit) * unit
    offsets = [(0, 0)]
    y = 0
    for lvl in range(1, max_level + 1):
        offsets.append((w0 + GAP, y))
        y += h0 // 2**lvl + GAP
    ha = max(h0, y) + GAP
    wa = w0 + GAP + (w0 // 2 + GAP if max_level > 0 else 0)
    atlas = torch.zeros(b, channels + 1, ha, wa, dtype=dtype, device=device)
    for i, img in enumerate(shrunk):
        atlas[i, :channels, : heights[i], : widths[i]] = img  # converts dtype in the copy
    # Coverage of every image in one broadcast compare instead of B fills.
    sizes = to_device(torch.tensor([heights, widths], dtype=torch.int32), device)
    rows = torch.arange(h0, device=device, dtype=torch.int32)
    cols = torch.arange(w0, device=device, dtype=torch.int32)
    atlas[:, channels, :h0, :w0] = (
        (rows[None, :, None] < sizes[0, :, None, None]) & (cols[None, None, :] < sizes[1, :, None, None])
    ).to(dtype)
    for lvl in range(1, max_level + 1):
        (px, py), (x, y) = offsets[lvl - 1], offsets[lvl]
        src = atlas[:, :, py : py + h0 // 2 ** (lvl - 1), px : px + w0 // 2 ** (lvl - 1)]
        hl, wl = h0 // 2**lvl, w0 // 2**lvl
        # Exactly half size, so the level's scale is exactly 1/2 per step.
        atlas[:, :, y : y + hl, x : x + wl] = F.interpolate(
            src, size=(hl, wl), mode="bilinear", antialias=True, align_corners=False
        )
    return MipAtlas(atlas, base, offsets, max_level)


def render_views(atlas: MipAtlas, matrices: Tensor, size: int, interpolation: str = "bilinear") -> Tensor:
    """All ``V`` views of one output size for the whole batch, in one ``grid_sample`` call.

    Args:
        atlas: from :func:`build_atlas` (built with these views among its ``matrices``).
        matrices: ``[B, V, 3, 3]`` original -> view of views that are ``size x size`` (CPU
            tensors preferred: the maps are composed on the host, then copied once).
        size: output side ``S``.
        interpolation: ``bilinear`` or ``bicubic``.

    Returns:
        ``[B, V, C, S, S]`` float in the input's value range (bicubic may overshoot it slightly;
        the caller clamps when it converts).
    """
    if interpolation not in ("bilinear", "bicubic"):
        raise ValueError(f"interpolation must be bilinear or bicubic, got {interpolation!r}")
    tensor = atlas.atlas
    b, c1, ha, wa = tensor.shape
    v = matrices.shape[1]
    device = tensor.device
    # Host side, float64: view pixel -> original -> level-0 canvas -> level l in the atlas ->
    # grid_sample's [-1, 1] (align_corners=False: the atlas edges sit at +-1).
    to_base = atlas.base[:, None] @ affine_inverse(matrices.detach().cpu().double())
    lvl = mip_level(shrink_factor(to_base), atlas.max_level)
    offs = torch.tensor(atlas.offsets, dtype=torch.float64)[lvl]  # [B, V, 2]
    scale = torch.pow(2.0, -lvl.double())
    norm = torch.tensor([2.0 / wa, 2.0 / ha], dtype=torch.float64)
    lin = to_base[..., :2, :2] * scale[..., None, None] * norm[:, None]
    off = (to_base[..., :2, 2] * scale[..., None] + offs) * norm - 1.0
    maps = to_device(torch.cat([lin, off[..., None]], dim=-1).to(tensor.dtype), device)  # [B, V, 2, 3]
    centres = cell_centres(size, size, 1.0, device, tensor.dtype)  # [S*S, 2] row-major (x, y)
    grid = centres @ maps[..., :2].transpose(-1, -2) + maps[..., None, :, 2]  # [B, V, S*S, 2]
    grid = grid.reshape(b, v * size, size, 2)  # the views of an image stacked along the height
    out = F.grid_sample(tensor, grid, mode=interpolation, padding_mode="zeros", align_corners=False)
    out = out.reshape(b, c1, v, size, size).transpose(1, 2)  # [B, V, C+1, S, S]
    cover = out[:, :, -1:].clamp(min=1e-6)
    return out[:, :, :-1] / cover
