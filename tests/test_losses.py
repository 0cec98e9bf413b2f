"""Properties of the QuadLinear surrogate and the AP losses (method doc §1.7-1.10)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from model.losses import (
    HAPVRLoss, InnerQuadLinearAP, QuadLinearAP, heaviside, info_nce, pseudo_labels, quad_linear,
    sigmoid_surrogate, similarity_regularization, sshn,
)

sigmas = st.floats(min_value=1e-3, max_value=1.0)
xs = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False)


def grad_at(x: float, sigma: float) -> float:
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    quad_linear(t, sigma).backward()
    return float(t.grad)


@given(sigma=sigmas)
def test_continuous_and_c1_at_knots(sigma):
    eps = sigma * 1e-6
    for knot in (-sigma, 0.0):
        left = float(quad_linear(torch.tensor(knot - eps, dtype=torch.float64), sigma))
        right = float(quad_linear(torch.tensor(knot + eps, dtype=torch.float64), sigma))
        assert left == pytest.approx(right, abs=1e-4)
        # slopes agree up to O(eps / sigma^2), measured relative to the linear slope 2 / sigma
        assert grad_at(knot - eps, sigma) == pytest.approx(grad_at(knot + eps, sigma), abs=1e-4 * 2 / sigma)
    assert float(quad_linear(torch.tensor(-sigma, dtype=torch.float64), sigma)) == pytest.approx(0.0)
    assert float(quad_linear(torch.tensor(0.0, dtype=torch.float64), sigma)) == pytest.approx(1.0)
    assert grad_at(-eps, sigma) == pytest.approx(2 / sigma, rel=1e-3)


@given(x=xs, sigma=sigmas)
def test_upper_bounds_the_step(x, sigma):
    t = torch.tensor(x, dtype=torch.float64)
    assert float(quad_linear(t, sigma)) >= float(heaviside(t))


@given(a=xs, b=xs, lam=st.floats(0, 1), sigma=sigmas)
def test_convex_and_non_decreasing(a, b, lam, sigma):
    f = lambda v: float(quad_linear(torch.tensor(v, dtype=torch.float64), sigma))  # noqa: E731
    mid = lam * a + (1 - lam) * b
    assert f(mid) <= lam * f(a) + (1 - lam) * f(b) + 1e-9
    lo, hi = min(a, b), max(a, b)
    assert f(lo) <= f(hi) + 1e-12


@given(x=st.floats(min_value=1e-3, max_value=50.0), sigma=sigmas)
def test_gradient_never_vanishes_for_misranked_pairs(x, sigma):
    # a negative scored x above a positive keeps slope 2/sigma ...
    assert grad_at(x, sigma) == pytest.approx(2 / sigma)
    # ... where a sigmoid surrogate's gradient vanishes far from 0
    t = torch.tensor(x * 10 + 1.0, dtype=torch.float64, requires_grad=True)
    sigmoid_surrogate(t, 0.01).backward()
    assert float(t.grad) < 1e-12


def exact_ap(scores: torch.Tensor, labels: torch.Tensor) -> float:
    order = scores.argsort(descending=True)
    rel = labels[order].double()
    precision = rel.cumsum(0) / torch.arange(1, len(rel) + 1)
    return float((precision * rel).sum() / rel.sum())


def test_equals_one_minus_exact_ap_when_perfectly_separated():
    sim = torch.tensor([[1.0, 0.9, 0.8, 0.3, 0.2, 0.1]])
    labels = torch.tensor([[1, 1, 1, 0, 0, 0]])
    loss = QuadLinearAP(sigma=0.05, rho=0.1)(sim, labels)
    assert float(loss) == pytest.approx(1 - exact_ap(sim[0], labels[0]), abs=1e-7)
    assert float(loss) == pytest.approx(0.0, abs=1e-7)


def test_gets_worse_monotonically_as_a_negative_climbs():
    labels = torch.tensor([[1, 1, 1, 0, 0]])
    previous = -1.0
    for neg_score in torch.linspace(0.0, 1.2, 25):
        sim = torch.tensor([[1.0, 0.8, 0.6, 0.1, float(neg_score)]])
        loss = float(QuadLinearAP(sigma=0.05, rho=0.1)(sim, labels))
        assert loss >= previous - 1e-9
        previous = loss
    assert previous > 0.3


def test_gradients_point_the_right_way():
    sim = torch.tensor([[1.0, 0.5, 0.55, 0.2]], requires_grad=True)
    labels = torch.tensor([[1, 1, 0, 0]])
    QuadLinearAP()(sim, labels).backward()
    grad = sim.grad[0]
    assert grad[1] < 0  # raising the out-ranked positive lowers the loss
    assert grad[2] > 0  # lowering the mis-ranked negative lowers the loss


def test_rho_only_rescales_positive_ranks():
    sim = torch.tensor([[1.0, 0.9, 0.95, 0.5]])
    labels = torch.tensor([[1, 1, 0, 1]])
    a = QuadLinearAP(rho=0.1)(sim, labels)
    b = QuadLinearAP(rho=1.0)(sim, labels)
    assert float(a) != pytest.approx(float(b))


def naive_inner_ap(f2f, pos, neg, labels, sigma, rho):
    """Direct transcription of §1.9 with Python loops (the reference)."""
    n, _, t, _ = f2f.shape
    total, weight = 0.0, 0.0
    for a in range(n):
        for b in range(n):
            if labels[a, b] == 0:
                continue
            ap_t = []
            for q in range(t):
                s = f2f[a, b, q]
                values = []
                for i in range(t):
                    if not pos[a, b, q, i]:
                        continue
                    above_pos = sum(float(heaviside(s[j] - s[i])) for j in range(t) if j != i and pos[a, b, q, j])
                    neg_rank = sum(float(quad_linear(s[j] - s[i], sigma)) for j in range(t) if j != i and neg[a, b, q, j])
                    values.append((1 + rho * above_pos) / (1 + rho * above_pos + neg_rank))
                ap_t.append(sum(values) / len(values))
            total += sum(ap_t) / t
            weight += 1
    return 1 - total / weight


def test_frame_level_loss_equals_naive_reference():
    g = torch.Generator().manual_seed(0)
    n, t = 4, 7
    f2f = torch.rand(n, n, t, t, generator=g, dtype=torch.float64)
    teacher = torch.nn.functional.normalize(torch.randn(n, t, 16, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.eye(n, dtype=torch.long)
    labels[0, 1] = labels[1, 0] = labels[2, 3] = 1
    pos, neg = pseudo_labels(teacher, 0.35, 0.35)
    assert pos.sum(-1).min() >= 1 and neg.sum(-1).min() >= 1
    assert not (pos & neg).any()
    expected = naive_inner_ap(f2f, pos, neg, labels, 0.05, 5.0)
    for chunk in (1, 3, 64):
        got = InnerQuadLinearAP(sigma=0.05, rho=5.0, chunk=chunk)(f2f, teacher, labels)
        assert float(got) == pytest.approx(expected, abs=1e-10)


def test_frame_level_loss_memory_for_32_clips_of_28_frames():
    """32 clips x 28 frames: the official formulation allocates >4 GB of B^2 T^3 tensors; ours runs on positives only."""
    import resource

    n, t = 32, 28
    f2f = torch.rand(n, n, t, t, requires_grad=True)
    teacher = torch.nn.functional.normalize(torch.randn(n, t, 384), dim=-1)
    labels = torch.eye(n)
    labels[torch.arange(0, n, 2), torch.arange(1, n, 2)] = 1
    labels[torch.arange(1, n, 2), torch.arange(0, n, 2)] = 1
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss = InnerQuadLinearAP()(f2f, teacher, labels)
    loss.backward()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert math.isfinite(float(loss.detach()))
    assert grown_kib < 4 * 1024 * 1024
    # gradient only reaches positive pairs, as in the official loss
    assert f2f.grad[0, 5].abs().sum() == 0 and f2f.grad[0, 1].abs().sum() > 0


def test_info_nce_matches_definition():
    sim = torch.tensor([[1.0, 0.8, 0.1], [0.8, 1.0, 0.3], [0.1, 0.3, 1.0]], dtype=torch.float64)
    labels = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]])
    tau = 0.03
    e = torch.exp(sim / tau)
    row0 = -math.log(e[0, 1] / (e[0, 1] + e[0, 2] + 1e-6))
    row1 = -math.log(e[1, 0] / (e[1, 0] + e[1, 2] + 1e-6))
    # row 2 has no non-trivial positive: contributes 0, as in the official code (0 / 0 guarded)
    assert float(info_nce(sim, labels, tau)) == pytest.approx((row0 + row1 + 0.0) / 3, rel=1e-9)


def test_sshn_and_regularisation():
    sim = torch.tensor([[0.9, 0.2, 0.6], [0.2, 0.95, 0.1], [0.6, 0.1, 1.0]])
    labels = torch.eye(3)
    hn, self_loss = sshn(sim, labels)
    assert float(hn) == pytest.approx(-(math.log(0.4) + math.log(0.8) + math.log(0.4)) / 3, rel=1e-6)
    assert float(self_loss) == pytest.approx(-(math.log(0.9) + math.log(0.95) + math.log(1.0)) / 3, rel=1e-6)
    psi = torch.tensor([-1.5, 0.0, 1.25, 3.0])
    assert float(similarity_regularization(psi)) == pytest.approx(0.5 + 0.25 + 2.0)


def test_total_loss_uses_official_weights():
    g = torch.Generator().manual_seed(1)
    n, t = 4, 8
    f2f = torch.rand(n, n, t, t, generator=g)
    video = torch.rand(n, n, generator=g)
    psi = torch.randn(n * n, 1, 2, 2, generator=g) * 2
    labels = torch.eye(n)
    labels[0, 1] = labels[1, 0] = 1
    teacher = torch.nn.functional.normalize(torch.randn(n, t, 8, generator=g), dim=-1)
    total, terms = HAPVRLoss()(f2f, video, psi, labels, teacher)
    expected = terms["nce"] + 6 * terms["frame_ap"] + 4 * terms["video_ap"] + 3 * terms["sshn"] + terms["reg"]
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_pooled_ap_sees_what_the_per_query_ap_cannot():
    """Each row ranks its positive first (per-query AP perfect), but row 1's positive scores below row 0's
    negative: only the pooled (μAP) surrogate counts that, and only it gives the weak positive a gradient."""
    from model.losses import PooledQuadLinearAP

    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    sims = torch.tensor([[1.0, 0.9, 0.6], [0.5, 1.0, 0.1], [0.2, 0.0, 1.0]], requires_grad=True)
    assert float(QuadLinearAP(0.05, 0.1)(sims, labels).detach()) < 1e-6  # per row: the positive leads by > sigma
    pooled = PooledQuadLinearAP(0.05, 0.1)(sims, labels)
    # pooled list, self pairs out: positives 0.9 and 0.5, negatives 0.6, 0.1, 0.2, 0.0. The positive 0.9
    # ranks first (AP term 1); 0.5 has R^-(0.6 - 0.5) = 1 + 2 * 0.1 / 0.05 = 5 above it and 0.9 (rho 0.1).
    expected = 1 - (1 + (1 + 0.1) / (1 + 0.1 + 5)) / 2
    assert float(pooled.detach()) == pytest.approx(expected, abs=1e-5)
    pooled.backward()
    assert sims.grad[1, 0] < 0 and sims.grad[0, 2] > 0  # raise the weak positive, lower the other row's negative
    well_ranked = torch.tensor([[1.0, 0.9, 0.2], [0.8, 1.0, 0.1], [0.2, 0.0, 1.0]])
    assert float(PooledQuadLinearAP(0.05, 0.1)(well_ranked, labels)) < 1e-6


def test_graded_negatives_asks_for_the_reference_order_of_negatives_only():
    """The graded term ranks negative pairs by the reference: about 0 for any increasing map of the
    reference, 1 for a floor (every negative equal), large for the reverse order, blind to positives,
    and its gradient spreads floored negatives apart in the reference's order."""
    from model.losses import graded_negatives

    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0],
                           [0.0, 0.0, 0.0, 1.0]])
    reference = torch.tensor([[0.9, 0.5, 0.1, 0.3], [0.5, 0.9, 0.2, 0.0], [0.1, 0.2, 0.9, 0.4],
                              [0.3, 0.0, 0.4, 0.9]])
    increasing = 0.5 + 4.0 * reference + reference ** 3
    assert float(graded_negatives(increasing, reference, labels)) < 1e-3
    assert float(graded_negatives(1 - reference, reference, labels)) > 5.0
    changed_positives = increasing.clone()
    changed_positives[0, 1] = changed_positives[1, 0] = -5.0
    changed_positives.fill_diagonal_(7.0)
    assert float(graded_negatives(changed_positives, reference, labels)) < 1e-3
    floor = torch.full((4, 4), 0.3, requires_grad=True)
    loss = graded_negatives(floor, reference, labels)
    assert float(loss.detach()) == pytest.approx(1.0, abs=1e-6)
    loss.backward()
    # descending the gradient raises the negative the reference ranks highest (2-3: 0.4), lowers the lowest (1-3: 0.0)
    assert floor.grad[2, 3] < 0 < floor.grad[1, 3]
    assert floor.grad[0, 1] == 0 and floor.grad[0, 0] == 0
