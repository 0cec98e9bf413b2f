"""HAP-VR similarity network (method doc §1.2–1.5), with the official parameter names.

query -> index_video (attention) -> region 9x9 dot products -> spatial
TopK-Chamfer (S^F, T x T') -> comparator CNN psi -> Hardtanh -> temporal
TopK-Chamfer -> one score. Rows are always the query (asymmetric, as the
official `symmetric=False`).

Without a trained checkpoint the learned parts are meaningless, so the
network then runs in ``chamfer`` mode: no attention, no comparator, score =
TopK-Chamfer of S^F. That is the "untrained Chamfer similarity" baseline.
A trained network with ``comparator=False`` runs in ``attention`` mode: its
attention, then that same TopK-Chamfer (not in the paper; see `comparator`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: the official evaluator splits long targets into chunks of this many frames and averages the chunk scores
TARGET_CHUNK = 2048
#: HAP-VR's evaluator tiles short videos to at least 8 frames (S2VS: 4); the CNN needs >= 4
MIN_FRAMES = 8
#: the video heads a learned network can score with: the paper's comparator CNN (`comparator=True`), or its
# attention followed by the training-free temporal TopK-Chamfer (`comparator=False`, not in the paper)
HEADS = ("comparator", "attention")


def topk_count(n: int | torch.Tensor, rate: float) -> int | torch.Tensor:
    """k = max(1, round(rate * n)); Python rounding (half to even) like the official `round`."""
    if isinstance(n, torch.Tensor):
        return torch.clamp(torch.round(n.to(torch.float64) * rate), min=1).to(torch.long)
    return max(1, round(n * rate))


def topk_chamfer(sim: torch.Tensor, rate: float, row_mask: torch.Tensor | None = None,
                 col_mask: torch.Tensor | None = None) -> torch.Tensor:
    """TopK-Chamfer over the last two dims (rows: query, cols: target) -> shape sim.shape[:-2].

    For each row, mean of its top-k entries (k = max(1, round(rate * valid cols))),
    then the mean over valid rows. Masks (..., n) / (..., m) hold 1 for real
    entries; padding never contributes and k is computed from the real length,
    so a padded batch scores exactly like its unpadded members.
    """
    m = sim.shape[-1]
    if col_mask is None:
        k = topk_count(m, rate)
        row_scores = sim.topk(k, dim=-1).values.mean(-1) if k > 1 else sim.amax(-1)
    else:
        col_mask = col_mask.bool()
        filled = sim.masked_fill(~col_mask.unsqueeze(-2), float("-inf"))
        k = topk_count(col_mask.sum(-1), rate)  # (...)
        kmax = int(k.max()) if k.numel() else 1
        top = filled.topk(min(kmax, m), dim=-1).values  # (..., n, kmax)
        if kmax == 1:
            row_scores = top[..., 0]
        else:
            keep = torch.arange(top.shape[-1], device=sim.device) < k.unsqueeze(-1).unsqueeze(-1)
            row_scores = top.masked_fill(~keep, 0.0).sum(-1) / k.unsqueeze(-1).to(sim.dtype)
        row_scores = torch.nan_to_num(row_scores, neginf=0.0)
    if row_mask is None:
        return row_scores.mean(-1)
    row_mask = row_mask.to(sim.dtype)
    return (row_scores * row_mask).sum(-1) / row_mask.sum(-1).clamp(min=1)


class Attention(nn.Module):
    """alpha = sigmoid(u^T tanh(W f + b)); f is rescaled by alpha and not re-normalised."""

    def __init__(self, dims: int = 512):
        super().__init__()
        self.transform = nn.Linear(dims, dims)
        self.context_vector = nn.Linear(dims, 1, bias=False)
        nn.init.xavier_uniform_(self.context_vector.weight)
        nn.init.xavier_uniform_(self.transform.weight)
        nn.init.zeros_(self.transform.bias)

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.context_vector(torch.tanh(self.transform(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool with stride 2 (odd last row / column dropped): `F.max_pool2d(x, 2, 2)`'s values.

    At inference it is two element-wise maxima of strided views, rows then columns: 6 to 10x faster on
    CPU than PyTorch's max_pool2d at the comparator's shapes (27 x 32 x 60 x 60: 0.8 against 7.5 ms,
    2-core Xeon, fp32 and bf16), where the pools had taken over half the comparator's time. Under
    autograd it is max_pool2d itself, whose gradient goes to one element of a tied window (the
    element-wise maxima would split it), so training is the official computation.
    """
    if torch.is_grad_enabled():
        return F.max_pool2d(x, 2, 2)
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


class VideoComparator(nn.Module):
    """ViSiL's comparator CNN psi (no batch norm): 32-64-128 3x3 convs, two 2x2 max-pools, 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.conv3 = nn.Conv2d(64, 128, 3)
        self.fconv = nn.Conv2d(128, 1, 1)
        for conv in (self.conv1, self.conv2, self.conv3, self.fconv):
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, sim: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """sim: B x 1 x T x T' (mask same shape, 1 = real) -> raw psi output and its mask."""

        def masked(x: torch.Tensor) -> torch.Tensor:
            return x if mask is None else x * mask

        x = masked(sim)
        for conv, pool in ((self.conv1, True), (self.conv2, True), (self.conv3, False)):
            x = F.relu(masked(conv(F.pad(x, (1, 1, 1, 1)))))
            if pool:
                x = max_pool2(x)
                if mask is not None:
                    # min-pool: a pooled cell is real only if all four inputs are, so a
                    # padded video of odd length T pools to floor(T/2) real cells exactly
                    # as the unpadded one does (the official max-pool keeps one more).
                    mask = -max_pool2(-mask)
                    x = x * mask
        return masked(self.fconv(x)), mask


def _groups(order: list[int], cost, budget: int):
    """Split indices (sorted by size) into consecutive groups whose padded cost stays within budget."""
    group: list[int] = []
    for j in order:
        # items are sorted ascending, so the newest item sets the padded width of the group
        if group and cost(j) * (len(group) + 1) > budget:
            yield group
            group = []
        group.append(j)
    if group:
        yield group


def _tiled_index(n: int, min_frames: int, device: torch.device) -> torch.Tensor:
    """Frame indices of a length-n video tiled as the official evaluator tiles short videos:
    0..n-1 repeated until there are at least min_frames."""
    reps = 1 if n >= min_frames else math.ceil(min_frames / n)
    return torch.arange(n * reps, device=device) % n


def full_product_f2f(x: torch.Tensor, rate: float) -> torch.Tensor:
    """S^F of every ordered pair of a batch N x T x R x D -> N x N x T x T through the whole region
    product, kept for autograd: any spatial rate, and the path `RegionMax` replaced at the official one
    (bench/train_step.py measures the two)."""
    n, t, r, d = x.shape
    flat = x.reshape(n * t * r, d)
    return topk_chamfer((flat @ flat.T).view(n, t, r, n, t, r).permute(0, 3, 1, 4, 2, 5), rate)


class RegionMax(torch.autograd.Function):
    """For every region a of a training batch (rows of `flat`, (N T R) x D), its best dot product
    with the R regions of every frame of the batch -> (N T R) x (N T). The same values and gradient as
    `(flat @ flat.T).view(..., R).amax(-1)` under autograd (which splits a tie's gradient, where this
    gives it to one region; tests/test_similarity.py), in 0.73 of the time (bench/train_step.py): the product
    is flat times its own transpose, so the forward pass computes each block of it once, for both of
    its orders, and keeps only which region won (one byte each) for the backward pass, where the two
    halves of the gradient add into one matrix before a single matrix product instead of two.
    """

    @staticmethod
    def forward(ctx, flat: torch.Tensor, frames: int, regions: int, chunk: int = 28) -> torch.Tensor:
        rows = flat.shape[0]
        best = torch.empty(rows, frames, dtype=flat.dtype, device=flat.device)
        winner = torch.empty(rows, frames, dtype=torch.uint8, device=flat.device)
        for first in range(0, frames, chunk):  # the blocks of `chunk` frames on and right of the diagonal
            last = min(frames, first + chunk)
            lo, hi = first * regions, last * regions
            block = flat[lo:hi] @ flat[lo:].T  # (c R) x (rows - lo)
            value, index = block.view(hi - lo, frames - first, regions).max(-1)
            best[lo:hi, first:], winner[lo:hi, first:] = value, index.to(torch.uint8)
            if hi < rows:  # the same block read as its transpose: rows below, frames of this chunk
                value, index = block[:, hi - lo:].view(last - first, regions, rows - hi).max(1)
                best[hi:, first:last], winner[hi:, first:last] = value.T, index.T.to(torch.uint8)
        ctx.save_for_backward(flat, winner)
        ctx.regions = regions
        return best

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        flat, winner = ctx.saved_tensors
        rows, frames = grad.shape
        cols = (torch.arange(frames, device=flat.device) * ctx.regions).unsqueeze(0) + winner.long()
        row = torch.arange(rows, device=flat.device).unsqueeze(1)
        grad = grad.reshape(-1).to(flat.dtype)
        full = torch.zeros(rows * rows, dtype=flat.dtype, device=flat.device)
        full.index_put_(((row * rows + cols).reshape(-1),), grad)  # one winner per (row, frame): no collision
        if flat.device.type == "cpu":  # CPU index_add_ is deterministic: add the transposed half in place
            full.index_add_(0, (cols * rows + row).reshape(-1), grad)
            return full.view(rows, rows) @ flat, None, None, None
        full = full.view(rows, rows)  # CUDA's index_add_ is not deterministic: two products instead
        return full @ flat + full.T @ flat, None, None, None


class HAPVRSimilarity(nn.Module):
    """The similarity network. 355,969 trainable parameters (attention 263,168 + CNN 92,801)."""

    def __init__(self, dims: int = 512, f2f_topk_rate: float = 0.1, v2v_topk_rate: float = 0.03,
                 learned: bool = True, min_frames: int = MIN_FRAMES, target_chunk: int = TARGET_CHUNK,
                 chamfer_mix: float = 0.0, comparator: bool = True):
        super().__init__()
        if not 0.0 <= chamfer_mix <= 1.0:
            raise ValueError(f"chamfer_mix must lie in [0, 1], got {chamfer_mix}")
        self.dims = dims
        self.f2f_topk_rate = f2f_topk_rate
        self.v2v_topk_rate = v2v_topk_rate
        self.learned = learned
        self.min_frames = min_frames
        self.target_chunk = target_chunk
        #: not in the paper (0 = the paper's score): at inference a learned network's score is
        #: (1 - m) * its own + m * the training-free Chamfer of the unattended features. The comparator
        #: cuts weak evidence to one floor value; the Chamfer share keeps such pairs graded, which is
        #: what a score threshold and μAP need (docs/TRAINING.md, "Mixing in the Chamfer score")
        self.chamfer_mix = chamfer_mix
        #: not in the paper (True = the paper's network): False keeps a trained network's attention and
        #: scores its attended S^F with the training-free temporal TopK-Chamfer instead of the comparator
        #: CNN. Training always uses the comparator; this is an inference choice, made on validation
        #: queries (docs/TRAINING.md, "Attention without the comparator")
        self.comparator = comparator
        self.attention = Attention(dims)
        self.comparator_module = VideoComparator()
        #: dtype of the region dot products at inference on CPU; bfloat16 halves the
        #: re-ranking time on CPUs with bf16 units (set by the engine), float32 is exact
        self.compute_dtype = torch.float32
        #: dtype of the comparator's convolutions at inference on CPU (set by the engine like
        #: `compute_dtype`, by its own probe); float32 is the paper's
        self.comparator_dtype = torch.float32

    @property
    def mode(self) -> str:
        """chamfer (untrained), attention (trained attention, Chamfer video score) or learned (the paper's)."""
        if not self.learned:
            return "chamfer"
        return "learned" if self.comparator else "attention"

    @property
    def uses_comparator(self) -> bool:
        """Whether scores come from the comparator's Hardtanh, i.e. lie in [-1, 1] on its own scale."""
        return self.learned and self.comparator

    # ----- ingestion
    def index_video(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Applied once at ingestion; the index stores its output. (B x)T x R x D -> same shape."""
        x = self.attention(features) if self.learned else features
        if mask is not None:
            x = x * mask.to(x.dtype)[..., None, None]
        return x

    # ----- frame level
    def frame_to_frame(self, query: torch.Tensor, targets: torch.Tensor,
                       target_mask: torch.Tensor | None = None) -> torch.Tensor:
        """S^F for one query (Tq x R x D) vs B targets (B x Tt x R x D) -> B x Tq x Tt.

        Region similarities are computed as one matrix product; spatial
        TopK-Chamfer then runs over the 9 target regions of each frame pair.
        The targets enter the product region-major (all frames' region 0, then region 1, ...), so the
        reduction over target regions compares 9 long contiguous rows element by element instead of
        reducing 9-wide groups: the same values, and 0.62 of the time of a batch of 7 60-frame targets
        (the size the re-rank batches; 2-core Xeon, bf16). The permuted copy of the targets is small next
        to the product.
        """
        tq, r, d = query.shape
        b, tt, rt, _ = targets.shape
        dtype = self.compute_dtype if query.device.type == "cpu" and not torch.is_grad_enabled() else query.dtype
        by_region = targets.to(dtype).permute(2, 0, 1, 3).reshape(rt * b * tt, d)
        region = query.reshape(tq * r, d).to(dtype) @ by_region.T  # (Tq*R) x (R'*B*Tt)
        region = region.view(tq, r, rt, b, tt)
        k = topk_count(rt, self.f2f_topk_rate)
        best = region.amax(2) if k == 1 else region.topk(k, dim=2).values.mean(2)
        s = best.float().mean(1).permute(1, 0, 2)  # B x Tq x Tt
        if target_mask is not None:
            s = s * target_mask.to(s.dtype)[:, None, :]
        return s

    def video_score(self, f2f: torch.Tensor, target_mask: torch.Tensor | None = None) -> torch.Tensor:
        """B x Tq x Tt frame similarities -> B video scores (in [-1, 1] when learned)."""
        if not self.uses_comparator:
            return self._chamfer_score(f2f, target_mask)
        b, tq, tt = f2f.shape
        # bf16 convolutions at inference on CPU where the engine found them faster (`comparator_dtype`)
        fast = (f2f.device.type == "cpu" and not torch.is_grad_enabled()
                and self.comparator_dtype == torch.bfloat16)
        dtype = torch.bfloat16 if fast else f2f.dtype
        mask = None
        if target_mask is not None:
            mask = target_mask.to(dtype)[:, None, None, :].expand(b, 1, tq, tt).contiguous()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            out, out_mask = self.comparator_module(f2f.to(dtype).unsqueeze(1), mask)
        out = F.hardtanh(out.float()).squeeze(1)
        out_mask = None if out_mask is None else out_mask.float()
        col_mask = None if out_mask is None else out_mask[:, 0, 0, :]
        return topk_chamfer(out, self.v2v_topk_rate, col_mask=col_mask)

    @torch.no_grad()
    def similarity(self, query: torch.Tensor, targets: list[torch.Tensor],
                   batch_cells: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One indexed query vs many indexed targets (each T_i x R x D, any length).

        Returns (scores of shape [len(targets)], [S^F of shape Tq x T_i per
        target]). S^F is computed once per target on the real frames; the
        tiling of short videos to `min_frames` (official evaluator) and the
        split of targets longer than `target_chunk` frames into chunks whose
        scores are averaged are applied to S^F by indexing, which is exactly
        what recomputing it on tiled/chunked features would give. Targets are
        padded into batches of at most `batch_cells` S^F cells (unset: sizes
        that suit the device, `_cells`), so memory stays bounded however many
        or long the targets are.
        """
        q, targets, product_cells, score_cells = self._prepared(query, targets, batch_cells)
        tq, device = len(q), q.device
        f2f_real = self._batched_f2f(q.to(self._work_dtype(device)), targets, product_cells)
        scores = self._video_scores(f2f_real, tq, self.video_score, score_cells, device)
        if self.learned and self.chamfer_mix:
            chamfer = self._video_scores(self._plain_f2f(q, targets, product_cells), tq, self._chamfer_score,
                                         score_cells, device)
            scores = (1 - self.chamfer_mix) * scores + self.chamfer_mix * chamfer
        return scores, f2f_real

    #: S^F cells per padded batch. On CPU small batches stay in cache: region products of 100 targets of
    #: 60 frames took 63 ms in batches of 250k cells against 105 ms in one batch of 4M, and the comparator
    #: 83 ms at 100k cells against 158 ms at 4M (2-core Xeon, bf16); a GPU wants large batches
    CPU_PRODUCT_CELLS, CPU_SCORE_CELLS, GPU_CELLS = 250_000, 100_000, 4_000_000

    def _work_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype of the region dot products (only those): the compute dtype on CPU, float32 on GPU."""
        return self.compute_dtype if device.type == "cpu" else torch.float32

    def _prepared(self, query: torch.Tensor, targets: list[torch.Tensor], batch_cells: int | None,
                  ) -> tuple[torch.Tensor, list[torch.Tensor], int, int]:
        """What `similarity` and `cascade_similarity` start from: the float32 query (never empty), the
        targets on its device in their stored dtype (fp16, often memory-mapped: each is cast once, into
        its padded batch), and the batch sizes."""
        q = query.float()
        if len(q) == 0:
            raise ValueError("the query has no frames")
        return q, [t.to(device=q.device) for t in targets], *self._cells(q.device, batch_cells)

    def _cells(self, device: torch.device, batch_cells: int | None) -> tuple[int, int]:
        if batch_cells is not None:
            return batch_cells, batch_cells
        if device.type == "cpu":
            return self.CPU_PRODUCT_CELLS, self.CPU_SCORE_CELLS
        return self.GPU_CELLS, self.GPU_CELLS

    def _plain_f2f(self, q: torch.Tensor, targets: list[torch.Tensor], cells: int) -> list[torch.Tensor]:
        """S^F of the unattended directions: attention scales each region vector by a positive weight, so
        normalising the stored vectors gives back the directions the training-free Chamfer compares."""
        return self._batched_f2f(F.normalize(q.float(), dim=-1).to(self._work_dtype(q.device)), targets, cells,
                                 unit=True)

    @torch.no_grad()
    def cascade_similarity(self, query: torch.Tensor, targets: list[torch.Tensor], keep: int | None,
                           batch_cells: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """`similarity` for a search over candidates, in two steps, for a learned network with a Chamfer share.

        The plain (unattended, cosine) S^F of every target gives its Chamfer share, which is cheap; the
        learned part (attended S^F, then the comparator) runs only on the `keep` targets with the highest
        Chamfer share, and the others score -inf. Returns the scores and every target's plain S^F, which
        is what segments are found on (computed once, not again for the results). `keep` None or at
        least len(targets): every target is scored exactly as `similarity` scores it.
        """
        if not (self.learned and self.chamfer_mix):
            raise ValueError("cascade_similarity needs a learned network with a Chamfer share")
        q, targets, product_cells, score_cells = self._prepared(query, targets, batch_cells)
        tq, device = len(q), q.device
        plain = self._plain_f2f(q, targets, product_cells)
        chamfer = self._video_scores(plain, tq, self._chamfer_score, score_cells, device)
        chosen = list(range(len(targets)))
        if keep is not None and keep < len(targets):
            chosen = torch.topk(chamfer, keep).indices.tolist()
        attended = self._batched_f2f(q.to(self._work_dtype(device)), [targets[i] for i in chosen], product_cells)
        learned = self._video_scores(attended, tq, self.video_score, score_cells, device)
        scores = torch.full((len(targets),), float("-inf"), device=device)
        index = torch.tensor(chosen, dtype=torch.long, device=device)
        scores[index] = (1 - self.chamfer_mix) * learned + self.chamfer_mix * chamfer[index]
        return scores, plain

    def _chamfer_score(self, f2f: torch.Tensor, target_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The training-free video score: temporal TopK-Chamfer of S^F."""
        return topk_chamfer(f2f, self.v2v_topk_rate, col_mask=target_mask)

    def _video_scores(self, f2f_real: list[torch.Tensor], tq: int, score, batch_cells: int,
                      device: torch.device) -> torch.Tensor:
        """One score per target from its real S^F, tiled and chunked as the official evaluator does."""
        dtype = torch.float32
        rows = _tiled_index(tq, self.min_frames, device)
        pieces: list[tuple[int, torch.Tensor]] = []
        for i, sim in enumerate(f2f_real):
            tt = sim.shape[1]
            for start in range(0, max(tt, 1), self.target_chunk):
                width = min(self.target_chunk, tt - start)
                cols = _tiled_index(max(width, 1), self.min_frames, device) + start
                pieces.append((i, sim[rows][:, cols] if tt else torch.zeros(len(rows), 0, device=device)))
        final = torch.zeros(len(f2f_real), dtype=dtype, device=device)
        counts = torch.zeros(len(f2f_real), dtype=dtype, device=device)
        order = sorted(range(len(pieces)), key=lambda j: pieces[j][1].shape[1])
        for group in _groups(order, lambda j: pieces[j][1].shape[1] * len(rows), batch_cells):
            tmax = max(pieces[j][1].shape[1] for j in group)
            batch = torch.zeros(len(group), len(rows), tmax, dtype=dtype, device=device)
            mask = torch.zeros(len(group), tmax, dtype=dtype, device=device)
            for row, j in enumerate(group):
                width = pieces[j][1].shape[1]
                batch[row, :, :width] = pieces[j][1]
                mask[row, :width] = 1
            # a group of one length has no padding: no mask, which spares the comparator a masked
            # multiply per layer (the same scores)
            scores = score(batch, None if bool(mask.all()) else mask)
            for row, j in enumerate(group):
                final[pieces[j][0]] += scores[row]
                counts[pieces[j][0]] += 1
        return final / counts.clamp(min=1)

    def _batched_f2f(self, q: torch.Tensor, targets: list[torch.Tensor], batch_cells: int,
                     unit: bool = False) -> list[torch.Tensor]:
        """S^F of q against every target, computed in padded batches of similar lengths; `unit`
        normalises the target region vectors first."""
        out: list[torch.Tensor | None] = [None] * len(targets)
        order = sorted(range(len(targets)), key=lambda j: len(targets[j]))
        for group in _groups(order, lambda j: len(targets[j]) * len(q) * 9, batch_cells):
            tmax = max(len(targets[j]) for j in group)
            if tmax == 0:
                for j in group:
                    out[j] = torch.zeros(len(q), 0, device=q.device)
                continue
            padded = torch.empty(len(group), tmax, *q.shape[1:], dtype=q.dtype, device=q.device)
            for row, j in enumerate(group):
                n = len(targets[j])
                if unit:  # one target at a time, while it is in cache: half the time of the whole batch
                    x = targets[j].to(torch.float32, copy=True)  # never the caller's tensor, normalised in place
                    padded[row, :n] = x.mul_(torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min_(1e-12)
                                             .reciprocal_())
                else:  # by way of float32: torch's fp16 -> bf16 cast runs at a third of fp16 -> fp32 -> bf16
                    padded[row, :n] = targets[j].float()
                padded[row, n:] = 0
            f2f = self.frame_to_frame(q, padded)
            for row, j in enumerate(group):
                out[j] = f2f[row, :, : len(targets[j])]
        return out  # type: ignore[return-value]

    # ----- training
    def _all_pairs_f2f(self, x: torch.Tensor) -> torch.Tensor:
        """S^F of every ordered pair of a batch N x T x R x D -> N x N x T x T (one region product)."""
        n, t, r, d = x.shape
        if topk_count(r, self.f2f_topk_rate) != 1:
            return full_product_f2f(x, self.f2f_topk_rate)
        best = RegionMax.apply(x.reshape(n * t * r, d), n * t, r)  # the official rate: best of 9 regions
        return best.view(n, t, r, n, t).mean(2).permute(0, 2, 1, 3)

    @torch.no_grad()
    def chamfer_all_pairs(self, x: torch.Tensor) -> torch.Tensor:
        """Training-free video scores (Chamfer of the unattended features) of every ordered pair of a
        batch N x T x R x D -> N x N: the reference of the graded-negatives term (`model.losses`)."""
        return topk_chamfer(self._all_pairs_f2f(F.normalize(x.float(), dim=-1)), self.v2v_topk_rate)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All-pairs similarity of a training batch N x T x R x D.

        Returns (S^F of every ordered pair, N x N x T x T; video similarities
        rescaled to [0, 1], N x N; the raw comparator output psi, for the
        regulariser).
        """
        n, t = x.shape[:2]
        x = self.index_video(x, mask)
        f2f = self._all_pairs_f2f(x)  # N x N x T x T
        pair_mask = None
        if mask is not None:
            m = mask.to(x.dtype)
            pair_mask = (m[:, None, :, None] * m[None, :, None, :]).reshape(n * n, 1, t, t)
            f2f = f2f * pair_mask.view(n, n, t, t)
        psi, out_mask = self.comparator_module(f2f.reshape(n * n, 1, t, t), pair_mask)
        sim = F.hardtanh(psi) / 2 + 0.5
        col_mask = None if out_mask is None else out_mask[:, 0, 0, :]
        row_mask = None if out_mask is None else out_mask[:, 0, :, 0]
        video = topk_chamfer(sim.squeeze(1), self.v2v_topk_rate, row_mask=row_mask, col_mask=col_mask)
        return f2f, video.view(n, n), psi
