"""Self-supervised HAP-VR training on cached features: `hapvr train VIDEOS --out CKPT`.

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

import argparse
import dataclasses
import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.augment import (PAPER_VIV_AREA, gather, pixel_video_in_video, pixel_view, temporal_indices,
                           video_in_video)
from model.checkpoint import save_similarity
from model.losses import (HAPVRLoss, InnerQuadLinearAP, LossWeights, PooledQuadLinearAP, QuadLinearAP,
                          sigmoid_surrogate)
from model.similarity import HEADS, HAPVRSimilarity
from model.teacher import backbone_teacher

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    window: int = 28  # W, frames per clip (official: 28)
    batch: int = 8  # source videos per step -> 2B clips (official: 64 per GPU; 16 take 2-6 s a step on 2 cores)
    steps: int = 200  # official: 30,000 on 2 GPUs
    lr: float = 2e-4  # official 4e-5 over 30k steps; ours is ~150x shorter, so a larger step size
    warmup: int = 20
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    strong_views: int = 3  # cached strong pixel views per video
    viv_p: float = 0.6  # official 0.3; a cached ViV view is usable only when its inset video is in the batch
    viv_views: int = 2  # cached pixel ViV views per video (another video inset); 0: approximate ViV on features
    viv_area_min: float = PAPER_VIV_AREA[0]  # share of the frame a ViV inset covers (model.augment)
    viv_area_max: float = PAPER_VIV_AREA[1]
    temperature: float = 0.03
    nce: float = 1.0
    frame_ap: float = 6.0
    video_ap: float = 4.0
    sshn: float = 3.0
    reg: float = 1.0
    pooled_ap: float = 0.0  # not in the paper: a μAP surrogate over the whole batch (docs/TRAINING.md)
    pooled_sigma: float = 0.05
    graded: float = 0.0  # not in the paper: keep negatives graded like the training-free Chamfer (docs/TRAINING.md)
    attention_lr: float = 1.0  # the attention's learning rate as a share of lr (the paper: 1)
    qlap_sigma: float = 0.05
    qlap_rho: float = 0.1
    inner_sigma: float = 0.05
    inner_rho: float = 5.0
    pseudo_top: float = 0.35
    pseudo_bottom: float = 0.35
    video_surrogate: str = "quadlinear"  # or "sigmoid" (Smooth-AP style, for the ablation)
    f2f_topk_rate: float = 0.1
    v2v_topk_rate: float = 0.03
    teacher: str = "backbone"  # or "dino" (the paper's; needs --dino-weights)
    dino_weights: str = ""  # DINO ViT-S/16 checkpoint supplied by the user (dino_deitsmall16_pretrain.pth)
    seed: int = 0
    save_every: int = 100
    # How the written checkpoint scores a pair at inference; training never sees these (its losses use
    # the learned score alone). "comparator" with share 0 is the paper's network; `make train-checkpoint`
    # sets the shipped recipe's fixed values (docs/TRAINING.md, "The inference setting").
    head: str = "comparator"  # or "attention": the trained attention, then training-free TopK-Chamfer
    chamfer_mix: float = 0.0  # share m of the untrained Chamfer score: (1 - m) * head + m * Chamfer
    extra: dict = field(default_factory=dict)

    @property
    def viv_area(self) -> tuple[float, float]:
        return self.viv_area_min, self.viv_area_max


# ----- cache
def build_cache(videos: list[Path], encoder, folder: Path, config: TrainConfig, fps: float = 1.0) -> list[Path]:
    """Encode one weak and `strong_views` strong pixel views of every video (skipped when cached)."""
    from tqdm import tqdm

    from indexer.decode import iter_frames
    from indexer.errors import InputError

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
        return np.concatenate([b.frames for b in iter_frames(path, fps=fps, min_frames=16,
                                                             size_for=lambda w, h: (256, 256))])

    out, sources = [], []
    for i, path in enumerate(tqdm(videos, desc="cache views", unit="video")):
        target = folder / f"{i:05d}-{path.stem}.pt"
        if not target.exists():
            try:
                frames = decode(path)
            except InputError as exc:
                log.warning("skipping %s: %s", path, exc.message)
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
                except (InputError, OSError) as exc:  # a source changed since its views were cached
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", help="video files or folders (unlabeled)")
    parser.add_argument("--out", required=True, help="checkpoint to write (weights + config, no optimizer)")
    parser.add_argument("--work", default="hapvr-train", help="cache, resumable state and training log")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    for name, value in asdict(TrainConfig()).items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)


def run(args: argparse.Namespace) -> int:
    from indexer.cli import expand_paths
    from indexer.settings import Settings
    from model.encoder import FrameEncoder

    config = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig()) if hasattr(args, k)})
    if config.head not in HEADS or not 0.0 <= config.chamfer_mix <= 1.0:
        print(f"hapvr train: --head must be one of {', '.join(HEADS)} and --chamfer-mix lie in [0, 1] "
              f"(got {config.head!r}, {config.chamfer_mix})", flush=True)
        return 2
    settings = Settings()
    device = settings.torch_device()
    # Trained on the fp32 features (the paper's precision): the checkpoint then serves the fp32 and the
    # int8 encoder alike, which approximate one feature space (`model.encoder.feature_space`).
    encoder = FrameEncoder(dataclasses.replace(settings.encoder_config(), precision="fp32", int8_ranges=None),
                           device=device, cache_dir=settings.cache_dir)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    videos = list(expand_paths(args.videos))
    cache_dir = work / (f"cache-{encoder.version.replace(':', '_')}-seed{config.seed}-k{config.strong_views}"
                        f"-{config.teacher}")
    files = build_cache(videos, encoder, cache_dir, config)
    if len(files) < 2:
        print("hapvr train: need at least two decodable videos", flush=True)
        return 2
    start = time.perf_counter()
    stem = Path(args.out).stem  # several runs (an ablation) can share one work folder and its cache
    net = train(FeatureCache(files, config.viv_views, config.viv_area), config, work / f"state-{stem}.pt",
                work / f"log-{stem}.jsonl",
                resume=args.resume, progress=not args.quiet, device=device)
    net.comparator, net.chamfer_mix = config.head == "comparator", config.chamfer_mix
    save_similarity(net.cpu(), Path(args.out), encoder_version=encoder.version,
                    trained={"config": asdict(config), "videos": len(files), "seconds": round(time.perf_counter() - start)})
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB) after {config.steps} steps")
    return 0
