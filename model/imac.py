"""Regional "intermediate MAC" (iMAC) descriptor of ViSiL / S2VS / HAP-VR.

Every stage map is max-pooled to a 3x3 grid of (overlapping) regions with the
kernel sizes of the official code (28/14/6/3 for 56/28/14/7-pixel maps, stride
ceil(k/2)), L2-normalised per stage, concatenated along channels and
L2-normalised again. PCA whitening happens afterwards (see `model.pca`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: map side -> max-pool kernel, as in the official resnet50_LiMAC extractor.
STAGE_KERNELS: dict[int, int] = {56: 28, 28: 14, 14: 6, 7: 3}
GRID = 3


def pool_window(side: int) -> tuple[int, int]:
    """(kernel, stride) that max-pool a side x side map to a 3x3 grid of overlapping regions.

    Map sides of a 224-pixel input use the official kernels; other sides (another
    input size) use windows of about half the side, three per axis, that cover
    the map exactly: stride side // 4 (at least 1), kernel side - 2 * stride. Unlike an
    adaptive pool this exports to ONNX with fixed shapes.
    """
    if side in STAGE_KERNELS:
        kernel = STAGE_KERNELS[side]
        return kernel, math.ceil(kernel / 2)
    if side < 3:
        raise ValueError(f"a {side}x{side} feature map is too small for a 3x3 region grid; use a larger input")
    stride = max(1, side // 4)
    return side - 2 * stride, stride


def regional_max_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """Max-pool an N x C x S x S map to N x C x 3 x 3 (official kernels at 224-pixel input)."""
    kernel, stride = pool_window(int(feature_map.shape[-1]))
    pooled = F.max_pool2d(feature_map, kernel_size=kernel, stride=stride)
    if pooled.shape[-1] != GRID:
        raise AssertionError(f"pooled to {pooled.shape[-1]}x{pooled.shape[-1]}, not {GRID}x{GRID}")
    return pooled


def imac(stage_maps: list[torch.Tensor]) -> torch.Tensor:
    """Stage maps -> N x 9 x sum(C) region descriptors, unit L2 norm."""
    pooled = [F.normalize(regional_max_pool(m), p=2, dim=1) for m in stage_maps]
    regions = F.normalize(torch.cat(pooled, dim=1), p=2, dim=1)
    return regions.flatten(2).transpose(1, 2).contiguous()
