"""PCA whitening of region descriptors, in ViSiL's file format (`mean`, `d`, `V`).

x -> normalize((x - mean) @ V[:, top] @ diag(d[top] + eps)^-1/2), as in the
method doc §1.1. Files may hold the full eigen-decomposition (ViSiL's
`pca_resnet50_vcdb_1M.pth`) or only the kept components (our shipped `.npz`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-7


def learn_pca(features: np.ndarray, dims: int = 512) -> dict[str, np.ndarray]:
    """Eigen-decompose the covariance of M x D features; returns the top `dims` components."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need an M x D matrix with M >= 2, got {x.shape}")
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    d, v = np.linalg.eigh(cov)
    order = np.argsort(d)[::-1][:dims]
    return {"mean": mean.astype(np.float32), "d": d[order].astype(np.float32), "V": v[:, order].astype(np.float32)}


def save_pca(params: dict[str, np.ndarray], path: str | Path, **meta: str) -> None:
    """Write an `.npz` atomically (temp file + rename) so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, mean=params["mean"], d=params["d"], V=params["V"], **{k: np.array(v) for k, v in meta.items()})
    tmp.replace(path)


def load_pca_params(path: str | Path) -> dict[str, np.ndarray]:
    """Read `mean`, `d`, `V` from a ViSiL `.pth` (torch dict) or an `.npz`."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as f:
            return {k: np.asarray(f[k]) for k in ("mean", "d", "V")}
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: (state[k].numpy() if torch.is_tensor(state[k]) else np.asarray(state[k])) for k in ("mean", "d", "V")}


def file_digest(path: str | Path) -> str:
    """Short content hash, used to version encoders and cache exports."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


class PCAWhitening(nn.Module):
    """Frozen whitening layer; output is L2-normalised."""

    def __init__(self, mean: np.ndarray, d: np.ndarray, V: np.ndarray, dims: int = 512, eps: float = EPS):
        super().__init__()
        order = np.argsort(d)[::-1][:dims]
        if len(order) < dims:
            raise ValueError(f"PCA file has {len(order)} components, {dims} requested")
        projection = V[:, order] / np.sqrt(d[order] + eps)[None, :]
        self.register_buffer("mean", torch.from_numpy(np.ascontiguousarray(mean, dtype=np.float32)))
        self.register_buffer("projection", torch.from_numpy(np.ascontiguousarray(projection, dtype=np.float32)))
        self.in_dims, self.out_dims = projection.shape

    @classmethod
    def from_file(cls, path: str | Path, dims: int = 512) -> "PCAWhitening":
        return cls(**load_pca_params(path), dims=dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_dims:
            raise ValueError(f"PCA expects {self.in_dims}-d input, got {x.shape[-1]}")
        return F.normalize((x - self.mean) @ self.projection, p=2, dim=-1)
