"""The BSD step's speed-ups change no value: the Gram-form affinity, the label-shared
backward path, foreach clipping / gradient checks and the fused AdamW, each against the
plain formulation it replaces."""
import copy

import pytest
import torch
import torch.nn.functional as F

from snncc.training import loop
from snncc.models.mlp import BSDMLP
from snncc.training.methods.bsd import affinity, flatten_time, interlayer_loss, repeat_time
from snncc.training.train import TrainConfig, TrainingDiverged, build_model, make_optimizer, train_step

SMALL = (20, 16, 12, 5)


def _normalized_affinity(v, v_hat):
    """Eq. 6 as written: cosine of normalised rows (the previous implementation)."""
    return F.normalize(v, dim=1, eps=1e-8) @ F.normalize(v_hat, dim=1, eps=1e-8).T


def test_gram_affinity_equals_normalised_rows_flat_and_time_major():
    g = torch.Generator().manual_seed(0)
    v, v_hat = torch.randn(3, 6, 7, generator=g, dtype=torch.float64), torch.randn(3, 4, 7, generator=g, dtype=torch.float64)
    v[:, 2] = 0.0  # a silent sample: C row of zeros, no NaN
    ref = _normalized_affinity(flatten_time(v), flatten_time(v_hat))
    assert torch.allclose(affinity(v, v_hat), ref, atol=1e-14)
    assert torch.allclose(affinity(flatten_time(v), flatten_time(v_hat)), ref, atol=1e-14)
    assert torch.equal(ref[2], torch.zeros(4, dtype=torch.float64))


@pytest.mark.parametrize("name", ["reco", "mse", "infonce"])
def test_index_expanded_losses_equal_the_losses_of_the_expanded_batch(name):
    g = torch.Generator().manual_seed(1)
    index = torch.tensor([2, 0, 1, 2, 2, 0])
    distinct = torch.randn(3, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)  # (T, 3 labels, D)
    per_sample = torch.randn(3, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    for a, b, kw in [(per_sample, distinct, dict(cols=index)), (distinct, per_sample, dict(rows=index))]:
        expanded = distinct.index_select(1, index)
        full_a = expanded if a is distinct else a
        full_b = expanded if b is distinct else b
        fast = interlayer_loss(name, a, b, 0.6, 0.1, **kw)
        slow = interlayer_loss(name, flatten_time(full_a), flatten_time(full_b), 0.6, 0.1)
        assert torch.allclose(fast, slow, rtol=1e-12)
        ga = torch.autograd.grad(fast, [per_sample, distinct])
        gb = torch.autograd.grad(slow, [per_sample, distinct])
        assert all(torch.allclose(x, y, rtol=1e-10, atol=1e-13) for x, y in zip(ga, gb))


def _pair(interlayer="reco"):
    torch.manual_seed(0)
    shared = BSDMLP(SMALL, timesteps=3, interlayer=interlayer).double()
    plain = copy.deepcopy(shared)
    plain.share_label_path = False
    return shared, plain


@pytest.mark.parametrize("interlayer", ["reco", "mse", "infonce"])
def test_label_shared_backward_path_gives_the_per_sample_losses_and_gradients(interlayer):
    shared, plain = _pair(interlayer)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(9, SMALL[0], generator=g, dtype=torch.float64)
    y = torch.tensor([3, 1, 3, 0, 4, 1, 3, 3, 0])  # repeated labels, label 2 absent
    results = []
    for model in (shared, plain):
        losses, info = model.training_losses(repeat_time(x, 3), y)
        model.zero_grad()
        torch.stack(list(losses.values())).sum().backward()
        results.append((losses, info, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (l1, i1, g1), (l2, i2, g2) = results
    assert l1.keys() == l2.keys()
    for k in l1:
        assert torch.allclose(l1[k], l2[k], rtol=1e-12, atol=1e-12), k
    for k in g1:
        assert g1[k].abs().sum() > 0 and torch.allclose(g1[k], g2[k], rtol=1e-10, atol=1e-12), k
    for k in i2["spikes"]:  # per-sample spikes in the info (firing rates, Hamming similarity)
        assert torch.equal(i1["spikes"][k], i2["spikes"][k]), k
    index, currents, _ = shared.label_path(y)
    assert currents[1].shape[1] == 4 and torch.equal(y.unique()[index], y)  # one row per distinct label


def test_backward_pass_is_per_sample_and_depends_only_on_the_label():
    shared, plain = _pair()
    y = torch.tensor([1, 0, 1, 4])
    cur, spk = shared.backward_pass(y)
    cur_ref, spk_ref = plain.backward_pass(y)
    for a, b in zip(cur[1:] + spk[2:], cur_ref[1:] + spk_ref[2:]):
        assert a.shape == b.shape and a.shape[1] == 4 and torch.allclose(a, b, atol=1e-12)
    assert torch.equal(cur[1][:, 0], cur[1][:, 2])


def _grads_model(method, seed=0):
    torch.manual_seed(seed)
    model = build_model(TrainConfig(method=method, sizes=(64, 32, 24, 10), timesteps=3))
    for p in model.parameters():
        p.grad = torch.randn_like(p) * (1e-3 if p.shape[0] == 24 else 3.0)  # some layers within the bound
    return model


@pytest.mark.parametrize("method", ["bsd", "bptt"])
def test_clipping_equals_clip_grad_norm_per_layer_or_global(method):
    model, ref = _grads_model(method), _grads_model(method)
    loop.clip(model, 0.3)
    if ref.local_clipping:
        for _, layer in ref.named_weight_layers():
            torch.nn.utils.clip_grad_norm_(layer.parameters(), 0.3)
    else:
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.3)
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-6, atol=0)
    norms = [float(layer.weight.grad.norm()) for _, layer in model.named_weight_layers()]
    if method == "bsd":
        assert max(norms) == pytest.approx(0.3, rel=1e-5) and min(norms) < 0.29  # per layer
    else:
        assert sum(n * n for n in norms) ** 0.5 == pytest.approx(0.3, rel=1e-5)


def test_non_finite_gradient_is_reported_but_a_large_finite_one_is_not():
    model = _grads_model("bsd")
    layers = model.named_weight_layers()
    layers[1][1].weight.grad[0, 0] = 1e30  # finite: the norm overflows float32, the elements do not
    loop.check_grads(loop.grad_norms(model))
    layers[3][1].weight.grad[1, 1] = float("nan")
    with pytest.raises(TrainingDiverged, match="gradient of backward layer 1") as info:
        loop.check_grads(loop.grad_norms(model))
    assert info.value.layer == layers[3][0]


def test_fused_adamw_matches_the_reference_update():
    torch.manual_seed(0)
    a = build_model(TrainConfig(method="bsd", sizes=(64, 32, 24, 10), timesteps=3))
    b = copy.deepcopy(a)
    opt_a = make_optimizer(a, 1e-3, 0.01)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-3, weight_decay=0.01, foreach=False)
    assert opt_a.defaults["fused"] and len(opt_a.param_groups) == 1
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    for _ in range(3):
        train_step(a, opt_a, x, y)
        train_step(b, opt_b, x, y)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_affinity_backward_passes_gradcheck_and_matches_autograd_with_silent_samples():
    g = torch.Generator().manual_seed(4)
    v = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    v_hat = torch.randn(3, 6, 4, generator=g, dtype=torch.float64)
    v.requires_grad_(), v_hat.requires_grad_()
    assert torch.autograd.gradcheck(affinity, (v, v_hat))
    flat = (v[0].detach().clone().requires_grad_(), v_hat[0].detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(affinity, flat)
    with torch.no_grad():  # a silent sample (floored norm; not differentiable, so no gradcheck):
        v[:, 1] = 0.0  # its gradient must still be what autograd of the normalised form gives
        v_hat[:, 4] = 0.0
    w = torch.randn(5, 6, generator=g, dtype=torch.float64)  # against autograd of the normalised form
    ga = torch.autograd.grad((affinity(v, v_hat) * w).sum(), (v, v_hat))
    gb = torch.autograd.grad((_normalized_affinity(flatten_time(v), flatten_time(v_hat)) * w).sum(), (v, v_hat))
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(ga, gb))
    assert ga[0][:, 1].abs().sum() > 0  # the silent sample does get a gradient
