"""Load and save similarity-network checkpoints, official ones included.

Official HAP-VR checkpoints name the comparator `comparator_module.*`, S2VS
ones `visil_head.*`; both may sit under a `model` key and carry the
`module.` prefix of DistributedDataParallel. Our own checkpoints are small
dicts: {"format": "hapvr-sim/1", "state_dict", "config", "encoder_version"}.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from model.similarity import HAPVRSimilarity

log = logging.getLogger(__name__)

FORMAT = "hapvr-sim/1"
REQUIRED = (
    "attention.transform.weight", "attention.transform.bias", "attention.context_vector.weight",
    "comparator_module.conv1.weight", "comparator_module.conv1.bias",
    "comparator_module.conv2.weight", "comparator_module.conv2.bias",
    "comparator_module.conv3.weight", "comparator_module.conv3.bias",
    "comparator_module.fconv.weight", "comparator_module.fconv.bias",
)


def normalise_state_dict(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap `model`/`state_dict` keys, strip `module.`, rename `visil_head.` -> `comparator_module.`."""
    for key in ("state_dict", "model"):
        if key in raw and isinstance(raw[key], dict):
            raw = raw[key]
    state: dict[str, torch.Tensor] = {}
    for name, value in raw.items():
        if not torch.is_tensor(value):
            continue
        name = name.removeprefix("module.")
        if name.startswith("visil_head."):
            name = "comparator_module." + name.removeprefix("visil_head.")
        state[name] = value
    return state


def load_similarity(path: str | Path, **overrides: Any) -> tuple[HAPVRSimilarity, dict[str, Any]]:
    """Build a learned HAPVRSimilarity from an official or our own checkpoint.

    Returns the network (eval mode) and the checkpoint's metadata (config,
    encoder_version; empty for official files).
    """
    raw = torch.load(Path(path), map_location="cpu", weights_only=False)
    meta = _metadata(raw)
    state = normalise_state_dict(raw)
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise ValueError(f"{path}: not a HAP-VR/S2VS similarity checkpoint (missing {missing[:4]})")
    dims = state["attention.transform.weight"].shape[0]
    config = dict(meta.get("config") or {})
    config.update(overrides)
    net = HAPVRSimilarity(dims=dims, learned=True, **{k: v for k, v in config.items()
                                                      if k in ("f2f_topk_rate", "v2v_topk_rate", "chamfer_mix",
                                                               "comparator")})
    net.load_state_dict({k: state[k] for k in REQUIRED}, strict=True)
    return net.eval(), meta


def _metadata(raw: Any) -> dict[str, Any]:
    """config, encoder_version and trained of a checkpoint of ours; empty for official files."""
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        return {k: raw.get(k) for k in ("config", "encoder_version", "trained")}
    return {}


def save_similarity(net: HAPVRSimilarity, path: str | Path, encoder_version: str, **extra: Any) -> None:
    """Weights + config only (no optimizer state): a few MB. Written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "config": {"f2f_topk_rate": net.f2f_topk_rate, "v2v_topk_rate": net.v2v_topk_rate,
                   "chamfer_mix": net.chamfer_mix, "comparator": net.comparator},
        "encoder_version": encoder_version,
        **extra,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
