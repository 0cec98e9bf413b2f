"""Time and memory of one `hapvr train` step: the batch's S^F through `RegionMax` (what training uses)
against autograd through the full region product (what it used before; the same values and gradient,
tests/test_similarity.py).

A step of the shipped recipe (`--batch 16 --pooled-ap 16`: 32 clips of 28 frames, 9 regions of 512
dims) on random unit features, forward, every loss term and backward. Speed does not depend on what
the features show, so no video is needed. Each measurement runs in a fresh process (one warm-up step,
then one timed step) so that peak memory is that variant's own; the variants alternate within each
round, because this VM's speed drifts by 10-20% within minutes, and the table shows the medians.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from bench.report import publish, table

VARIANTS = {"full": "full region product, autograd (before)", "region_max": "RegionMax (training now)"}


def one_step(variant: str, sources: int, window: int = 28) -> dict[str, float]:
    """Warm-up step, then a timed one; returns its seconds, the loss and the process's peak RSS."""
    import torch.nn.functional as F

    from model.similarity import HAPVRSimilarity, full_product_f2f
    from model.teacher import backbone_teacher
    from model.train import TrainConfig, make_loss

    g = torch.Generator().manual_seed(0)
    weak = F.normalize(torch.randn(sources, window, 9, 512, generator=g), dim=-1)
    strong = F.normalize(weak + 0.5 * torch.randn(weak.shape, generator=g), dim=-1)
    clips = torch.cat([weak, strong])
    eye = torch.eye(sources)
    labels = torch.cat([torch.cat([eye, eye], 1)] * 2)
    torch.manual_seed(0)
    net = HAPVRSimilarity()
    if variant == "full":
        net._all_pairs_f2f = lambda x: full_product_f2f(x, net.f2f_topk_rate)  # the previous training path
    loss_fn = make_loss(TrainConfig(batch=sources, pooled_ap=16))
    seconds = loss = 0.0
    for _ in range(2):
        net.zero_grad(set_to_none=True)
        start = time.perf_counter()
        f2f, sim, psi = net(clips)
        total, _ = loss_fn(f2f, sim, psi, labels, backbone_teacher(clips))
        total.backward()
        seconds, loss = time.perf_counter() - start, float(total.detach())
    return {"seconds": seconds, "loss": loss, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sources", type=int, default=16, help="source videos per step (the shipped recipe: 16)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/BENCHMARKS.md alone")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_step(args.child, args.sources)))
        return
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for i in range(args.rounds):
        for variant in (list(VARIANTS) if i % 2 == 0 else list(reversed(VARIANTS))):
            out = subprocess.run([sys.executable, "-m", "bench.train_step", "--child", variant,
                                  "--sources", str(args.sources)], capture_output=True, text=True, check=True)
            runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
    median = {v: statistics.median(r["seconds"] for r in rs) for v, rs in runs.items()}
    rows = [[VARIANTS[v], f"{median[v]:.2f}", f"{median[v] / median['full']:.2f}",
             f"{max(r['peak_mb'] for r in rs):.0f}", f"{rs[0]['loss']:.6f}"] for v, rs in runs.items()]
    body = (table(["S^F of the training batch", "step (s, median)", "vs before", "peak RSS (MB)", "loss"], rows)
            + f"\n\nOne step of the shipped recipe: {args.sources} sources ({2 * args.sources} clips of 28 frames), "
              f"forward, every loss term (`--pooled-ap 16`) and backward, on random unit features; "
              f"{args.rounds} rounds, the variants alternating, each step in its own process after a warm-up step.")
    publish("train_step", "Training step: S^F of the batch", "python -m bench.train_step", body, args.no_write)


if __name__ == "__main__":
    main()
