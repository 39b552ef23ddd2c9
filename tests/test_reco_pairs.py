"""ReCo pair variants (--reco-pairs) and the shared norm floor of the loss and its closed-form gradient."""
import pytest
import torch

import math

from snncc.training.methods.bsd import pair_masks, reco_grad_closed_form, reco_loss, same_label


def _case(shape=(), b=8, n=11, d=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    s_prev = (torch.rand(*shape, b, n, generator=g, dtype=torch.float64) < 0.5).double()
    s_prev[..., 0] = 1.0
    w = torch.randn(d, n, generator=g, dtype=torch.float64, requires_grad=True)
    v_hat = torch.randn(*shape, b, d, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 2, 1, 0, 3, 2])[:b]
    return s_prev, w, v_hat, y


def _flat(t, shape, b):
    return t.transpose(0, 1).reshape(b, -1) if shape else t


@pytest.mark.parametrize("pairs, weight", [("all", 1.0), ("distinct-labels", 1.0), ("same-label-positive", 1.0),
                                           ("all", 0.0), ("all", 0.25), ("all", 2.0)])
@pytest.mark.parametrize("shape", [(), (3,)], ids=["per-step", "time-flattened"])
def test_closed_form_gradient_matches_autograd_for_every_variant(pairs, weight, shape):
    """Every pair variant, and the same-label weight under eq. 7's pairs."""
    s_prev, w, v_hat, y = _case(shape)
    b = len(y)
    v = s_prev @ w.T
    same = same_label(y)
    reco_loss(_flat(v, shape, b), _flat(v_hat, shape, b), 0.6, pairs=pairs, same=same, same_weight=weight).backward()
    closed = reco_grad_closed_form(v.detach(), v_hat, s_prev, 0.6, pairs=pairs, same=same, same_weight=weight)
    assert torch.allclose(w.grad, closed, rtol=1e-10, atol=1e-12)


def test_variants_by_hand():
    """Two samples of one label, one of another; targets u = v (C = identity on the first two up to
    the same-label cosine)."""
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    same = same_label(y)
    # C = [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert reco_loss(v, v, 0.5, pairs="all").item() == pytest.approx(0.5 * 2)  # the same-label pair repelled
    assert reco_loss(v, v, 0.5, pairs="distinct-labels", same=same).item() == pytest.approx(0.0)
    assert reco_loss(v, v, 0.5, pairs="same-label-positive", same=same).item() == pytest.approx(0.0)
    other = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    # C(v, other) = [[1, 0, 0], [1, 0, 0], [0, 1, 1]]: sample 1 misses its target; 0 and 1 share a label
    assert reco_loss(v, other, 0.5, pairs="distinct-labels", same=same).item() == pytest.approx(1.0 + 0.5 * 1)
    assert reco_loss(v, other, 0.5, pairs="same-label-positive", same=same).item() == pytest.approx(
        1.0 + 1.0 + 0.5 * 1)  # (1 - C_11)^2 + (1 - C_01)^2 + lam * C_21^2
    with pytest.raises(ValueError, match="same-label mask"):
        reco_loss(v, v, 0.5, pairs="distinct-labels")
    with pytest.raises(ValueError, match="unknown reco pairs"):
        pair_masks("some", 3)


@pytest.mark.parametrize("pairs", ["all", "same-label-positive"])
@pytest.mark.parametrize("which", ["v", "v_hat"])
def test_all_zero_row_gives_the_same_finite_gradient(which, pairs):
    """A silent sample (an all-zero current row) in either input: loss and closed form share the norm floor,
    so the closed form is finite and equals autograd (it used to be NaN for the whole matrix)."""
    s_prev, w, v_hat, y = _case()
    same = same_label(y)
    if which == "v":
        s_prev[2] = 0.0  # no input spikes: v_2 = W s_2 = 0
    else:
        v_hat[4] = 0.0
    v = s_prev @ w.T
    assert (v.abs().sum(1) == 0).any() or (v_hat.abs().sum(1) == 0).any()
    loss = reco_loss(v, v_hat, 0.6, pairs=pairs, same=same)
    assert torch.isfinite(loss)
    loss.backward()
    closed = reco_grad_closed_form(v.detach(), v_hat, s_prev, 0.6, pairs=pairs, same=same)
    assert torch.isfinite(closed).all()
    assert torch.allclose(w.grad, closed, rtol=1e-10, atol=1e-12)


def test_same_weight_by_hand_and_its_end_points():
    """C = [[1, 1, 0], [1, 1, 0], [0, 0, 1]] (samples 0 and 1 share a label): the same-label pair (both orders)
    costs lam * w each; w = 1 is eq. 7 as written, w = 0 is distinct-labels."""
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    same = same_label(torch.tensor([0, 0, 1]))
    assert reco_loss(v, v, 0.5, same=same, same_weight=0.3).item() == pytest.approx(0.5 * 0.3 * 2)
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, 5, generator=g, dtype=torch.float64)
    same = same_label(torch.tensor([0, 1, 0, 2, 1, 0, 3, 2]))
    assert reco_loss(a, b, 0.6, same=same, same_weight=1.0).item() == pytest.approx(reco_loss(a, b, 0.6).item())
    assert reco_loss(a, b, 0.6, same=same, same_weight=0.0).item() == pytest.approx(
        reco_loss(a, b, 0.6, pairs="distinct-labels", same=same).item())
    with pytest.raises(ValueError, match="same-label mask"):
        reco_loss(a, b, 0.6, same_weight=0.5)
    with pytest.raises(ValueError, match="applies to reco pairs 'all'"):
        reco_loss(a, b, 0.6, pairs="distinct-labels", same=same, same_weight=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        reco_loss(a, b, 0.6, same=same, same_weight=-0.1)


@pytest.mark.parametrize("w", [0.1, 0.3])
def test_same_weight_own_target_cosine_settles_at_one_over_one_plus_lam_w_m(w):
    """m other samples share sample k's target: its loss is (1 - c)^2 + lam * w * m * c^2, minimised at
    c = 1 / (1 + lam * w * m)."""
    m, lam = 11, 0.6
    target = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    same = torch.ones(m + 1, m + 1, dtype=torch.bool)
    cs = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)
    losses = []
    for c in cs:
        v_k = torch.tensor([float(c), math.sqrt(max(0.0, 1 - float(c) ** 2)), 0.0], dtype=torch.float64)
        others = torch.zeros(m, 3, dtype=torch.float64)
        others[:, 2] = -1.0  # orthogonal to the target and to v_k: each costs 1, nothing else
        loss = reco_loss(torch.cat([v_k[None], others]), target.expand(m + 1, 3), lam, same=same, same_weight=w)
        assert loss.item() == pytest.approx((1 - c.item()) ** 2 + lam * w * m * c.item() ** 2 + m, abs=1e-9)
        losses.append(loss.item())
    assert cs[int(torch.tensor(losses).argmin())].item() == pytest.approx(1 / (1 + lam * w * m), abs=1e-3)
