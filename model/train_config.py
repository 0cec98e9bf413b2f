"""The training configuration, free of torch so that building the `hapvr` parser stays fast."""
from __future__ import annotations

from dataclasses import dataclass, field

#: share of the frame a video-in-video inset covers, 1 - lambda with lambda ~ U(0.3, 0.7) in the paper
PAPER_VIV_AREA = (0.3, 0.7)


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
