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


def regional_max_pool(feature_map: torch.Tensor) -> torch.Tensor:
    """Max-pool an N x C x S x S map to N x C x 3 x 3 with the official kernels."""
    side = int(feature_map.shape[-1])
    kernel = STAGE_KERNELS.get(side)
    if kernel is None:
        # Sizes the official code never sees (non-224 input): fall back to an
        # adaptive pool so the grid is still 3x3.
        return F.adaptive_max_pool2d(feature_map, GRID)
    pooled = F.max_pool2d(feature_map, kernel_size=kernel, stride=math.ceil(kernel / 2))
    if pooled.shape[-1] != GRID:
        pooled = F.adaptive_max_pool2d(pooled, GRID)
    return pooled


def imac(stage_maps: list[torch.Tensor]) -> torch.Tensor:
    """Stage maps -> N x 9 x sum(C) region descriptors, unit L2 norm."""
    pooled = [F.normalize(regional_max_pool(m), p=2, dim=1) for m in stage_maps]
    regions = F.normalize(torch.cat(pooled, dim=1), p=2, dim=1)
    return regions.flatten(2).transpose(1, 2).contiguous()
