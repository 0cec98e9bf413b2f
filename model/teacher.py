"""Frame-level teachers for the pseudo-labels of the frame-level AP loss (method doc §1.8).

The paper's teacher is DINO ViT-S/16 (CLS token, 384-d). Its weights cannot be had offline, so the
default teacher is the frozen backbone itself: the L2-normalised mean of a frame's 9 region vectors
(before attention). `DinoViTS16` loads the official DINO checkpoint (`dino_deitsmall16_pretrain.pth`,
or the `teacher` entry of a DINO training checkpoint) when the user supplies it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def backbone_teacher(features: torch.Tensor) -> torch.Tensor:
    """... x T x 9 x D region features -> ... x T x D unit frame descriptors (the default teacher)."""
    return F.normalize(features.float().mean(-2), dim=-1)


class _Block(nn.Module):
    def __init__(self, dim: int = 384, heads: int = 6):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, dim * 3)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, dim * 4)
        self.mlp.fc2 = nn.Linear(dim * 4, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.attn.proj(att.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class DinoViTS16(nn.Module):
    """ViT-S/16 with DINO's parameter names; forward(uint8 N x 224 x 224 x 3) -> N x 384 unit CLS features.

    Inputs are normalised with ImageNet mean/std (the official HAP-VR code feeds raw 0-255 values, a
    quirk noted in the method doc §5; we do not reproduce it).
    """

    def __init__(self, depth: int = 12, dim: int = 384):
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, 16, 16)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 197, dim))
        self.blocks = nn.ModuleList(_Block(dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        # not in DINO's checkpoints, so not part of the state dict
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255, persistent=False)

    @classmethod
    def from_file(cls, path: str | Path) -> "DinoViTS16":
        state = torch.load(Path(path), map_location="cpu", weights_only=False)
        if isinstance(state, dict) and "teacher" in state:
            state = state["teacher"]
        state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()
                 if not k.removeprefix("module.").startswith("head.")}
        net = cls()
        net.load_state_dict(state, strict=True)
        return net.eval()

    @torch.no_grad()
    def forward(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(frames).permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return F.normalize(self.norm(x)[:, 0], dim=-1)
