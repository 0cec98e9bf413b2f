"""Self-supervised HAP-VR training on cached features (`hapvr train VIDEOS --out CKPT`, indexer/train_cli.py).

Practical on a 2-core CPU because the frozen encoder runs once per cached view, not per step:
1. cache: every video is decoded at 1 fps (densely for short clips), one weak and K strong pixel
   views are drawn (`model.augment.pixel_view`) and encoded; features are stored in fp16;
2. steps: each batch takes B sources, a 2W-frame window each, a W-frame weak crop and a strong view
   with a temporal transform (re-indexing cached features: exact), video-in-video (cached pixel views,
   or approximated on the region grid with --viv-views 0), labels Y = 1[L0 L0^T > 0], teacher frame
   features for the pseudo-labels, and the total loss of the paper (plus the pooled AP term of
   `model.losses.PooledQuadLinearAP` when --pooled-ap > 0 and of `model.losses.graded_negatives` when
   --graded > 0, both off by default). AdamW, linear warm-up then cosine decay, per step.
Batches are a pure function of (seed, step), so `--resume` continues exactly.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from model.augment import (gather, pixel_video_in_video, pixel_view, temporal_indices,
                           video_in_video)
from model.losses import (HAPVRLoss, InnerQuadLinearAP, LossWeights, PooledQuadLinearAP, QuadLinearAP,
                          sigmoid_surrogate)
from model.similarity import HAPVRSimilarity
from model.teacher import backbone_teacher
from model.train_config import PAPER_VIV_AREA, TrainConfig  # torch-free, for the CLI parser

log = logging.getLogger(__name__)


# ----- cache
def build_cache(videos: list[Path], encoder, folder: Path, config: TrainConfig,
                read: Callable[[Path, float], np.ndarray], unreadable: tuple[type[Exception], ...] = (OSError,),
                fps: float = 1.0) -> list[Path]:
    """Encode one weak and `strong_views` strong pixel views of every video (skipped when cached).

    `read(path, fps)` gives a video's sampled frames (N x 256 x 256 x 3 uint8; `indexer.decode.training_frames`
    for `hapvr train`): decoding is the caller's, so that model/ stays below the indexer. A video whose
    `read` raises one of `unreadable` is skipped with a warning.
    """
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    dino = None
    if config.teacher == "dino":
        from model.teacher import DinoViTS16

        if not config.dino_weights:
            raise ValueError("--teacher dino needs --dino-weights (DINO ViT-S/16 weights; nothing is downloaded)")
        dino = DinoViTS16.from_file(config.dino_weights)
    elif config.teacher != "backbone":
        raise ValueError(f"unknown teacher {config.teacher!r}: backbone or dino")
    special = folder / "_special.pt"
    if not special.exists():
        black = np.zeros((1, 224, 224, 3), np.uint8)
        noise = np.random.default_rng(config.seed).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
        items = {"black": encoder.encode(black)[0].half(), "noise": encoder.encode(noise)[0].half()}
        if dino is not None:
            items |= {"black_teacher": dino(black)[0].half(), "noise_teacher": dino(noise)[0].half()}
        torch.save(items, special)

    @functools.lru_cache(maxsize=4)  # the ViV pass decodes each video a few times; keep a few decoded
    def decode(path: Path) -> np.ndarray:
        return read(path, fps)

    out, sources = [], []
    for i, path in enumerate(tqdm(videos, desc="cache views", unit="video")):
        target = folder / f"{i:05d}-{path.stem}.pt"
        if not target.exists():
            try:
                frames = decode(path)
            except unreadable as exc:
                log.warning("skipping %s: %s", path, exc)
                continue
            rng = np.random.default_rng([config.seed, i])
            pixels = [pixel_view(frames, rng, strong=False)]
            pixels += [pixel_view(frames, rng, strong=True) for _ in range(config.strong_views)]
            views = {"weak": encoder.encode(pixels[0]).half(), "strong": [encoder.encode(p).half() for p in pixels[1:]]}
            if dino is not None:  # the paper's teacher: CLS features of the same augmented frames
                views["teacher_weak"] = dino(pixels[0]).half()
                views["teacher_strong"] = [dino(p).half() for p in pixels[1:]]
            _save(views, target)
        out.append(target)
        sources.append(path)
    if config.viv_views > 0 and len(out) > 1:
        for i, (target, path) in enumerate(zip(tqdm(out, desc="cache ViV views", unit="video"), sources)):
            viv_file = viv_path(target, config.viv_views, config.viv_area)
            if viv_file.exists():
                continue
            rng = np.random.default_rng([config.seed, 2, int(target.name[:5])])
            views = {"viv": [], "inset": []}
            for _ in range(config.viv_views):
                j = int(rng.choice([k for k in range(len(out)) if k != i]))
                try:
                    host, inset = decode(path), decode(sources[j])
                except (*unreadable, OSError) as exc:  # a source changed since its views were cached
                    log.warning("no ViV view for %s: %s", path, exc)
                    continue
                pixels = pixel_video_in_video(pixel_view(host, rng, strong=True),
                                              pixel_view(inset, rng, strong=True), rng, config.viv_area)
                views["viv"].append(encoder.encode(pixels).half())
                views["inset"].append(out[j].name)
                if dino is not None:
                    views.setdefault("teacher_viv", []).append(dino(pixels).half())
            _save(views, viv_file)
    return out


def viv_path(target: Path, views: int, area: tuple[float, float] = PAPER_VIV_AREA) -> Path:
    """Pixel ViV views of a cached video live beside it, one file per setting of --viv-views and inset area."""
    tag = "" if tuple(area) == PAPER_VIV_AREA else f"-a{area[0]:g}-{area[1]:g}"
    return target.with_name(f"{target.stem}.viv{views}{tag}.pt")


def _save(obj: dict, target: Path) -> None:
    tmp = target.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(target)


class FeatureCache:
    """Every cached view in memory (fp16); `viv_views` > 0 also loads the pixel ViV views of that setting."""

    def __init__(self, files: list[Path], viv_views: int = 0, viv_area: tuple[float, float] = PAPER_VIV_AREA):
        special = torch.load(files[0].parent / "_special.pt")
        self.black, self.noise = special["black"].float(), special["noise"].float()
        self.black_teacher = special.get("black_teacher")
        self.noise_teacher = special.get("noise_teacher")
        self.videos = [torch.load(f) for f in files]
        self.has_teacher = all("teacher_weak" in v for v in self.videos)
        #: per video, its pixel ViV views as (features, teacher features or None, index of the inset video)
        self.viv: list[list[tuple[torch.Tensor, torch.Tensor | None, int]]] = [[] for _ in files]
        index = {f.name: k for k, f in enumerate(files)}
        for k, f in enumerate(files):
            path = viv_path(f, viv_views, viv_area)
            if viv_views > 0 and path.exists():
                views = torch.load(path)
                teachers = views.get("teacher_viv", [None] * len(views["viv"]))
                self.viv[k] = [(v, t, index[name]) for v, t, name in zip(views["viv"], teachers, views["inset"])
                               if name in index]


# ----- batches
def make_batch(cache: FeatureCache, config: TrainConfig, step: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(N x W x 9 x D clips: B weak then B strong, N x N labels, N x W x D' teacher features or None for
    the backbone teacher), a pure function of (seed, step)."""
    rng = np.random.default_rng([config.seed, 1, step])
    w, b = config.window, min(config.batch, len(cache.videos))
    sources = rng.choice(len(cache.videos), size=b, replace=False)
    weak, strong, teach_weak, teach_strong, maps = [], [], [], [], []
    for s in sources:
        video = cache.videos[s]
        t = len(video["weak"])
        start = int(rng.integers(0, max(1, t)))
        window = (start + np.arange(2 * w)) % t if t < 2 * w else start % max(1, t - 2 * w + 1) + np.arange(2 * w)
        offset = int(rng.integers(0, w + 1))
        weak.append(video["weak"][window[offset : offset + w]].float())
        k = int(rng.integers(len(video["strong"])))
        idx = temporal_indices(2 * w, w, rng)
        mapped = np.where(idx >= 0, window[np.clip(idx, 0, None)], idx)
        strong.append(gather(video["strong"][k].float(), mapped, cache.black, cache.noise))
        maps.append(mapped)
        if cache.has_teacher:
            teach_weak.append(video["teacher_weak"][window[offset : offset + w]].float())
            teach_strong.append(gather(video["teacher_strong"][k].float(), mapped, cache.black_teacher.float(),
                                       cache.noise_teacher.float()))
    links = np.eye(b)
    position = {int(s): k for k, s in enumerate(sources)}
    for j in range(b):  # video-in-video: strong clip j gets (a clip of) video i inside it
        if rng.random() < config.viv_p and b > 1:
            if any(cache.viv):  # pixel ViV (the paper's), cached: usable when its inset video is in the batch
                options = [(feats, teach, position[inset]) for feats, teach, inset in cache.viv[int(sources[j])]
                           if inset in position]
                if not options:
                    continue
                feats, teach, i = options[int(rng.integers(len(options)))]
                strong[j] = gather(feats.float(), maps[j], cache.black, cache.noise)
                if cache.has_teacher and teach is not None:
                    teach_strong[j] = gather(teach.float(), maps[j], cache.black_teacher.float(),
                                             cache.noise_teacher.float())
            else:
                i = int(rng.choice([k for k in range(b) if k != j]))
                strong[j] = video_in_video(strong[j], strong[i], rng)
            links[j, i] = 1
    l0 = torch.from_numpy(np.concatenate([np.eye(b), links])).float()
    labels = (l0 @ l0.T > 0).float()
    # approximate ViV keeps the host's teacher features; pixel ViV has the teacher's view of the real pixels
    teacher = torch.stack(teach_weak + teach_strong) if cache.has_teacher else None
    return torch.stack(weak + strong), labels, teacher


def lr_at(step: int, config: TrainConfig) -> float:
    if step < config.warmup:
        return config.lr * (0.01 + 0.99 * step / max(1, config.warmup))
    progress = (step - config.warmup) / max(1, config.steps - config.warmup)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_loss(config: TrainConfig) -> HAPVRLoss:
    surrogate = {"quadlinear": None, "sigmoid": sigmoid_surrogate}[config.video_surrogate]
    video_ap = QuadLinearAP(config.qlap_sigma, config.qlap_rho) if surrogate is None else \
        QuadLinearAP(0.01, config.qlap_rho, surrogate=surrogate)
    return HAPVRLoss(LossWeights(config.nce, config.frame_ap, config.video_ap, config.sshn, config.reg,
                                 config.pooled_ap, config.graded),
                     temperature=config.temperature, video_ap=video_ap,
                     pooled_ap=PooledQuadLinearAP(config.pooled_sigma, config.qlap_rho),
                     frame_ap=InnerQuadLinearAP(config.inner_sigma, config.inner_rho, config.pseudo_top,
                                                config.pseudo_bottom))


# ----- the loop
def train(cache: FeatureCache, config: TrainConfig, state_path: Path, log_path: Path,
          resume: bool = False, progress: bool = True, device: str = "cpu") -> HAPVRSimilarity:
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    net = HAPVRSimilarity(f2f_topk_rate=config.f2f_topk_rate, v2v_topk_rate=config.v2v_topk_rate).to(device)
    groups = [{"params": list(net.attention.parameters()), "scale": config.attention_lr},
              {"params": list(net.comparator_module.parameters()), "scale": 1.0}]
    optimizer = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = make_loss(config)
    start = 0
    if resume and state_path.exists():
        state = torch.load(state_path, weights_only=False)
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="train", disable=not progress)
    with open(log_path, "a") as logf:
        for step in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, config) * group.get("scale", 1.0)
            clips, labels, teacher = make_batch(cache, config, step)
            clips, labels = clips.to(device), labels.to(device)
            t0 = time.perf_counter()
            f2f, sim, psi = net(clips)
            if not config.frame_ap:
                teacher = None
            elif teacher is None:
                teacher = backbone_teacher(clips)
            teacher = teacher.to(device) if teacher is not None else None
            reference = net.chamfer_all_pairs(clips) if config.graded else None
            total, terms = loss_fn(f2f, sim, psi, labels, teacher, reference)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            record = {"step": step + 1, "loss": round(float(total.detach()), 5),
                      **{k: round(v, 5) for k, v in terms.items()}, "lr": group["lr"],
                      "seconds": round(time.perf_counter() - t0, 3)}
            logf.write(json.dumps(record) + "\n")
            logf.flush()
            bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items()})
            if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                tmp = state_path.with_suffix(".tmp")
                torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                            "config": asdict(config)}, tmp)
                tmp.replace(state_path)
    return net.eval()
