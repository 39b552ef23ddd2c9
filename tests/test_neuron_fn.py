"""The fused multi-step neuron (layers.MultiStepNeuron) against autograd through the
per-step single neuron definition with spikingjelly's surrogate spike function."""
import pytest
import torch

from snncc import neuron as nrn
from snncc.neuron import NeuronParams
from snncc.models.layers import SURROGATES, SpikingNeuron


def reference(x, params, surrogate_name, detach_reset):
    """The per-step formulation: every op recorded by autograd (the previous implementation)."""
    leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input = params.scalars()
    spike_fn = SURROGATES[surrogate_name]()
    v, out = torch.full_like(x[0], v_rest), []
    for t in range(x.shape[0]):
        h = nrn.charge(v, x[t], leaky, inv_tau, v_rest, decay_input)
        s = spike_fn(h - v_th)
        v = nrn.reset(h, s.detach() if detach_reset else s, v_th, v_reset, soft)
        out.append(s)
    return torch.stack(out)


@pytest.mark.parametrize("model", ["lif", "lif-no-input-decay", "if"])
@pytest.mark.parametrize("reset", ["hard", "soft"])
@pytest.mark.parametrize("surrogate", ["atan", "sigmoid"])
@pytest.mark.parametrize("detach_reset", [False, True])
def test_spikes_and_gradient_equal_autograd_of_the_per_step_definition(model, reset, surrogate, detach_reset):
    no_decay = model == "lif-no-input-decay"  # MSKD eq. 1's form: tau 4/3 (alpha 0.25), threshold for unscaled input
    params = NeuronParams(model="if" if model == "if" else "lif", tau=4 / 3 if no_decay else 2.0,
                          v_th=1.2 if no_decay else 0.6, v_reset=-0.1 if reset == "hard" else 0.0, reset=reset,
                          decay_input=not no_decay)
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(6, 5, 7, generator=g, dtype=torch.float64) * 1.2 - 0.1).requires_grad_()
    upstream = torch.randn(6, 5, 7, generator=g, dtype=torch.float64)
    neuron = SpikingNeuron(params, surrogate, detach_reset)
    s = neuron(x)
    s_ref = reference(x, params, surrogate, detach_reset)
    assert torch.equal(s, s_ref) and 0 < s.mean() < 1  # some but not all neurons fire
    (grad,) = torch.autograd.grad((s * upstream).sum(), x, retain_graph=True)
    (grad_ref,) = torch.autograd.grad((s_ref * upstream).sum(), x)
    assert torch.allclose(grad, grad_ref, rtol=1e-12, atol=1e-14)
    # the gradient crosses time steps (through the membrane), not only within a step
    (g_first,) = torch.autograd.grad(s[-1].sum(), x)
    assert g_first[0].abs().sum() > 0


def test_float32_spikes_are_binary_and_no_graph_without_grad():
    x = torch.rand(4, 3, 9) * 0.5
    neuron = SpikingNeuron(NeuronParams(v_th=0.2))
    with torch.no_grad():
        s = neuron(x.requires_grad_())
    assert s.dtype == torch.float32 and s.grad_fn is None
    assert torch.equal(s, reference(x.detach(), neuron.params, "atan", False))
    assert set(s.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_fires_exactly_like_neuron_fire_including_ties(dtype):
    """Currents that land exactly on the threshold (H == v_th) fire, as nrn.fire says."""
    params = NeuronParams(model="if", v_th=0.5, reset="hard")  # IF: H = U + I, exact in binary
    x = torch.tensor([[0.25, 0.5, 0.125], [0.25, 0.375, 0.375], [0.5, 0.0, 0.0]], dtype=dtype).unsqueeze(-1)
    s = SpikingNeuron(params)(x)
    leaky, inv_tau, v_th, v_reset, v_rest, soft, decay_input = params.scalars()
    v, expected = v_rest, []
    for t in range(3):
        h = nrn.charge(v, x[t], leaky, inv_tau, v_rest, decay_input)
        f = nrn.fire(h, v_th)
        expected.append(f)
        v = nrn.reset(h, f, v_th, v_reset, soft)
    assert s.dtype == dtype and torch.equal(s, torch.stack(expected).to(dtype))
    assert s.squeeze(-1).tolist() == [[0, 1, 0], [1, 0, 1], [1, 0, 0]]
