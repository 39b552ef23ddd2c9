"""Bidirectional spike-based distillation (BSD; Lv et al., Sec. 4, Alg. 1): the method, its local losses, helpers.

The architectures that use them (MLP, CNN, RNN, autoencoder) are in :mod:`snncc.models`; this module is
the method: ReCo and its ablations, the top-layer losses, label codes, readout (FFT-ReCo for the
autoencoder: :mod:`snncc.training.methods.bsd_fft`).
For the MLP (:class:`snncc.models.mlp.BSDMLP`):

Two spiking paths with independent weights (criterion C1):

* the feedforward path (Type 1 neurons) ``v_1 = x``, ``v_i = W_{i-1} s_{i-1}``,
  ``s_i = SN(v_i)`` (eq. 4), kept as ``self.forward_path``, an ``nn.Sequential`` of
  ``TimeDistributed(Flatten)``, ``SpikingNeuron`` and ``TimeDistributed(Linear)`` only,
  which is what the exporter traces;
* the backward path (Type 2 neurons) ``v'_L = s_hat`` (the label code),
  ``v'_i = Theta_i s'_{i+1}``, ``s'_i = SN(v'_i)`` (eq. 5).

Every weight learns only from the local loss of the neurons it feeds (C2): each
layer's input spikes are detached, and so is the apical target of each loss. Both
paths run in the same pass and are updated by one optimizer step (C3). Neurons
exchange binary spikes only (C4); ReCo is an unsigned alignment loss (C5).

Voltage vectors. A layer's "voltage" ``v_i`` is its synaptic input current over
the whole simulation: the (T, D_i) currents of one sample are flattened into one
vector of length T*D_i before the cosine affinity of eq. 6. This keeps the
temporal pattern (the paper does not say how T is folded in), and because the
current of each step is linear in that step's input spikes, eq. 17 still holds
with the outer product summed over steps (see ``reco_grad_closed_form``).

Cost. The backward path is a function of the label alone (label code in, row-wise
Theta and neurons after it), so ``BSDMLP`` runs it once per distinct label in the
batch (10 rows for MNIST instead of 128) and the losses read each sample's row
through an index (``label_path``): the same values and gradients as the
per-sample path (``share_label_path=False``; tests/test_bsd_fastpath.py), at a
fraction of the Theta and ReCo matrix products. The affinity is computed on the
time-major currents without transposed copies, with a closed-form backward.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from snncc.ir.ops import Readout
from snncc.neuron import HARD, NeuronParams
from snncc.models.layers import SpikingNeuron
from snncc.training.methods.base import Method, ModelKind, TrainingMethod, Variant

_EPS = 1e-8  # norm floor: a silent layer (all-zero current) gives C = 0, not NaN


# ---------------------------------------------------------------- inter-layer losses
def flatten_time(v: torch.Tensor) -> torch.Tensor:
    """(T, B, D) currents -> (B, T*D): one voltage vector per sample (see module doc)."""
    return v.transpose(0, 1).reshape(v.shape[1], -1)


def _sample_norms(v: torch.Tensor) -> torch.Tensor:
    """||v_k|| of each sample's T*D vector for time-major (T, B, D) -> (B,) (contiguous reductions)."""
    return torch.linalg.vector_norm(torch.linalg.vector_norm(v, dim=2), dim=0)


class _Affinity(torch.autograd.Function):
    """C = (V V_hat^T) / (N M^T) for time-major (T, B, D), (T, B_hat, D); N, M the norms floored at _EPS.

    Backward in closed form (the chain rule through the Gram matrix and the norms):
    with A = dC / (N M^T), dV_k = sum_j A_kj v_hat_j - (sum_j dC_kj C_kj / n_k^2) v_k, the
    second term absent where the norm is floored (a silent sample); dV_hat likewise. One
    batched matmul and one scaled copy per input instead of autograd's chain of full-size
    normalisation temporaries.
    """

    @staticmethod
    def forward(ctx, v, v_hat):
        n, m = _sample_norms(v), _sample_norms(v_hat)
        nc, mc = n.clamp_min(_EPS), m.clamp_min(_EPS)
        gram = torch.bmm(v, v_hat.transpose(1, 2)).sum(0) if v.shape[0] > 1 else v[0] @ v_hat[0].T
        c = gram / torch.outer(nc, mc)
        ctx.save_for_backward(v, v_hat, n, m, c)
        return c

    @staticmethod
    def backward(ctx, dc):
        v, v_hat, n, m, c = ctx.saved_tensors
        nc, mc = n.clamp_min(_EPS), m.clamp_min(_EPS)
        a = dc / torch.outer(nc, mc)
        dcc = dc * c
        grad_v = grad_v_hat = None
        t = v.shape[0]
        if ctx.needs_input_grad[0]:
            r = torch.where(n > _EPS, dcc.sum(1) / (nc * nc), torch.zeros_like(n))
            grad_v = torch.baddbmm(v * (-r)[None, :, None], a.expand(t, -1, -1), v_hat)
        if ctx.needs_input_grad[1]:
            r = torch.where(m > _EPS, dcc.sum(0) / (mc * mc), torch.zeros_like(m))
            grad_v_hat = torch.baddbmm(v_hat * (-r)[None, :, None], a.T.expand(t, -1, -1), v)
        return grad_v, grad_v_hat


def affinity(v: torch.Tensor, v_hat: torch.Tensor) -> torch.Tensor:
    """Eq. 6: [C]_kj = cos(v_k, v_hat_j) -> (B, B_hat).

    Rows of (B, D) matrices, or time-major (T, B, D) currents, whose per-sample
    vector is the T*D flattening of the module doc (the cosine does not depend on
    the order of the elements, so no transposed copy is made). Computed as the
    Gram matrix of the raw voltages divided by the outer product of their norms
    (:class:`_Affinity`): the same C as normalising every row first
    (``F.normalize``, norm floor _EPS) without writing normalised copies of the
    voltages and their gradients.
    """
    if v.dim() == 2:
        v, v_hat = v.unsqueeze(0), v_hat.unsqueeze(0)
    return _Affinity.apply(v, v_hat)


def _gather(c: torch.Tensor, rows, cols) -> torch.Tensor:
    """Expand an affinity between distinct rows to the full batch: C[rows][:, cols]."""
    if rows is not None:
        c = c.index_select(0, rows)
    if cols is not None:
        c = c.index_select(1, cols)
    return c


# Which off-diagonal pairs (k, j) of eq. 7 count, given the labels (the paper's targets are label codes,
# so every sample of a label shares one target and C_kj = C_kk for same-label pairs):
#   "all"                  eq. 7 as written: every k != j is a negative (the paper; it also repels same-label
#                          samples, so C_kk settles at 1 / (1 + lam * m), docs/methods.md)
#   "distinct-labels"      only pairs with different labels are negatives; same-label pairs are ignored
#   "same-label-positive"  pairs with different labels are negatives; same-label pairs are positives,
#                          attracted like the diagonal, (1 - C_kj)^2 (snncc's variant, not the paper's)
RECO_PAIRS = ("all", "distinct-labels", "same-label-positive")


def check_reco_pairs(pairs: str) -> str:
    if pairs not in RECO_PAIRS:
        raise ValueError(f"unknown reco pairs {pairs!r} (choose from {', '.join(RECO_PAIRS)})")
    return pairs


def pair_masks(pairs: str, n: int, same=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) boolean (n, n) masks of eq. 7's terms for ``pairs``; ``same[k, j]``: samples k and j
    share a label (required unless ``pairs == "all"``)."""
    eye = torch.eye(n, dtype=torch.bool, device=device)
    if check_reco_pairs(pairs) == "all":
        return eye, ~eye
    if same is None or tuple(same.shape) != (n, n):
        raise ValueError(f"reco pairs {pairs!r} needs the ({n}, {n}) same-label mask")
    same = same | eye
    return (eye if pairs == "distinct-labels" else same), ~same


def same_label(y: torch.Tensor) -> torch.Tensor:
    """(B, B) mask: samples k and j have the same label."""
    return y[:, None] == y[None, :]


def check_same_weight(pairs: str, same_weight: float) -> float:
    """``same_weight`` (the repulsion weight of same-label pairs, :func:`negative_weights`) if valid for ``pairs``."""
    w = float(same_weight)
    if not w >= 0.0 or w == float("inf"):
        raise ValueError(f"reco same-label weight must be a finite number >= 0, got {same_weight!r}")
    if w != 1.0 and check_reco_pairs(pairs) != "all":
        raise ValueError(f"a reco same-label weight applies to reco pairs 'all' (got {pairs!r})")
    return w


def negative_weights(neg: torch.Tensor, same_weight: float, same, dtype) -> torch.Tensor:
    """The weight of each negative pair's lam * max(0, C_kj)^2: 1, except same-label pairs, ``same_weight``
    (snncc's variant between eq. 7 as written, w = 1, and "distinct-labels", w = 0; the own-target cosine
    then settles at 1 / (1 + lam * w * m), docs/methods.md). ``neg``: the negatives' mask."""
    if same_weight != 1.0 and (same is None or same.shape != neg.shape):
        raise ValueError(f"a reco same-label weight needs the {tuple(neg.shape)} same-label mask")
    w = neg.to(dtype)
    return w if same_weight == 1.0 else w.masked_fill(same & neg, same_weight)


def reco_loss(v: torch.Tensor, v_hat: torch.Tensor, lam: float, rows=None, cols=None, pairs: str = "all",
              same=None, same_weight: float = 1.0) -> torch.Tensor:
    """Eq. 7 (ReCo): sum_k (1 - C_kk)^2 + lam * sum_{k != j} max(0, C_kj)^2 (``pairs="all"``).

    ``v_hat`` is the target; the caller detaches it. Summed (not averaged) over
    the batch as in the paper. ``v``/``v_hat`` are (B, D) or time-major (T, B, D).
    ``rows`` / ``cols`` (optional (B,) index tensors) say that ``v`` / ``v_hat``
    hold only distinct samples and sample k is row ``rows[k]`` / ``cols[k]``;
    the loss is then exactly that of the expanded batch (see BSDMLP).
    ``pairs`` / ``same``: which pairs are positives and negatives (:data:`RECO_PAIRS`, :func:`pair_masks`);
    ``same_weight``: the weight of the same-label negatives under ``pairs="all"`` (:func:`negative_weights`).
    """
    c = _gather(affinity(v, v_hat), rows, cols)
    pos, neg = pair_masks(pairs, len(c), same, c.device)
    if pairs == "all":  # the diagonal alone: no (B, B) temporaries for the positives
        attract = ((1.0 - torch.diagonal(c)) ** 2).sum()
    else:
        attract = ((1.0 - c) ** 2).masked_fill(~pos, 0.0).sum()
    if check_same_weight(pairs, same_weight) == 1.0:
        return attract + lam * (c.clamp(min=0.0) ** 2).masked_fill(~neg, 0.0).sum()
    return attract + lam * (c.clamp(min=0.0) ** 2 * negative_weights(neg, same_weight, same, c.dtype)).sum()


def _reco_grad_v(v: torch.Tensor, v_hat: torch.Tensor, lam: float, pairs: str = "all",
                 same=None, same_weight: float = 1.0) -> torch.Tensor:
    """Eqs. 15-16: rows dL/dv_k for (B, D) voltages. Norms are floored at _EPS as in :func:`reco_loss`
    (a silent, all-zero row has C = 0 and a finite gradient, not NaN)."""
    n = v.norm(dim=1, keepdim=True)
    norm = n.clamp_min(_EPS)
    u, u_hat = v / norm, v_hat / v_hat.norm(dim=1, keepdim=True).clamp_min(_EPS)
    c = u @ u_hat.T
    pos, neg = pair_masks(pairs, len(c), same, c.device)
    weight = negative_weights(neg, check_same_weight(pairs, same_weight), same, c.dtype)
    coef = 2.0 * lam * c.clamp(min=0.0) * weight  # negative pairs of eq. 15
    coef = torch.where(pos, -2.0 * (1.0 - c), coef)  # positive pairs (the diagonal, eq. 15)
    # eq. 16: dC_kj/dv_k = (u_hat_j - C_kj u_k) / ||v_k||, weighted and summed over j; the second term is
    # absent where the norm is floored (as in _Affinity's backward)
    radial = torch.where(n > _EPS, (coef * c).sum(1, keepdim=True), torch.zeros_like(n))
    return (coef @ u_hat - radial * u) / norm


def reco_grad_closed_form(v: torch.Tensor, v_hat: torch.Tensor, s_prev: torch.Tensor,
                          lam: float, pairs: str = "all", same=None, same_weight: float = 1.0) -> torch.Tensor:
    """Eq. 17: dL/dW = sum_k (dL/dv_k) s_{i-1,k}^T for v = W s_prev, as a (D, N) matrix.

    Takes (B, D) voltages with (B, N) spikes, or time-major (T, B, D) / (T, B, N)
    tensors flattened as in training, where the outer products also sum over T.
    """
    if v.dim() == 2:
        return _reco_grad_v(v, v_hat, lam, pairs, same, same_weight).T @ s_prev
    t, b, d = v.shape
    g = _reco_grad_v(flatten_time(v), flatten_time(v_hat), lam, pairs, same, same_weight).reshape(b, t, d)
    return torch.einsum("btd,tbn->dn", g, s_prev)


def _rows(t: torch.Tensor, index) -> torch.Tensor:
    """Per-sample (B, D) view of (B, D) or time-major (T, B, D) voltages, expanded by ``index``."""
    if t.dim() == 3:
        t = flatten_time(t if index is None else t.index_select(1, index))
    elif index is not None:
        t = t.index_select(0, index)
    return t


def mse_loss(v: torch.Tensor, v_hat: torch.Tensor, rows=None, cols=None) -> torch.Tensor:
    """Ablation "BSD-MSE" (Sec. 5.6): per-sample mean squared error, summed over the batch."""
    return F.mse_loss(_rows(v, rows), _rows(v_hat, cols), reduction="none").mean(1).sum()


def infonce_loss(v: torch.Tensor, v_hat: torch.Tensor, temperature: float = 0.1, rows=None,
                 cols=None) -> torch.Tensor:
    """Ablation "BSD-InfoNCE" (Sec. 5.6): sample k's positive is v_hat_k, the batch its negatives."""
    logits = _gather(affinity(v, v_hat), rows, cols) / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=v.device), reduction="sum")


INTERLAYER_LOSSES = ("reco", "mse", "infonce")


def interlayer_loss(name: str, v: torch.Tensor, v_hat: torch.Tensor, lam: float = 0.6,
                    temperature: float = 0.1, rows=None, cols=None, pairs: str = "all",
                    same=None, same_weight: float = 1.0) -> torch.Tensor:
    """The local alignment loss between basal ``v`` and apical target ``v_hat``: (B, D) rows or
    time-major (T, B, D) currents flattened per sample; ``rows``/``cols``/``pairs``/``same`` as in
    :func:`reco_loss` (``pairs`` and ``same_weight`` apply to ReCo only)."""
    if name == "reco":
        return reco_loss(v, v_hat, lam, rows, cols, pairs, same, same_weight)
    if name == "mse":
        return mse_loss(v, v_hat, rows, cols)
    if name == "infonce":
        return infonce_loss(v, v_hat, temperature, rows, cols)
    raise ValueError(f"unknown inter-layer loss {name!r} (choose from {', '.join(INTERLAYER_LOSSES)})")


# ---------------------------------------------------------------- top-layer loss
TOP_LOSSES = ("ce", "firing")


def check_population(population, outputs: int | None = None) -> int:
    """``population`` (output neurons per class) as an int >= 1, else ValueError; with ``outputs``, it must
    divide the output layer's size."""
    if isinstance(population, bool) or not isinstance(population, int) or population < 1:
        raise ValueError(f"population must be an integer >= 1, got {population!r}")
    if outputs is not None and outputs % population:
        raise ValueError(f"an output layer of {outputs} neurons cannot hold blocks of {population} (population)")
    return population


def check_top_loss(kind: str) -> str:
    """``kind`` if it names a top loss, else ValueError listing them."""
    if kind not in TOP_LOSSES:
        raise ValueError(f"unknown top loss {kind!r} (choose from {', '.join(TOP_LOSSES)})")
    return kind


def top_loss(kind: str, v_top: torch.Tensor, y: torch.Tensor, neuron: NeuronParams,
             population: int = 1) -> torch.Tensor:
    """The top layer's loss on its (T, B, C·P) currents, summed over the batch (eq. 9); ``neuron``: the top
    population's parameters; ``population`` P: output neurons per class (:func:`label_code`).

    ``"ce"`` is the paper's: cross-entropy on the time-averaged currents v_L (with P > 1, each class's
    logit is the mean over its block of P neurons). It depends
    only on differences between classes, so the common level of the currents is left
    free, while the deployed readout counts spikes: a class is seen only if its current
    reaches the firing level, and two classes that both fire every step tie. Under AdamW
    the level drifts (docs/results.md) and the spike readout loses samples.

    ``"firing"`` (snncc's addition, not in the paper) is the spike readout's own
    condition as a loss: a logistic loss per output neuron on ``v_L,c - neuron.firing_current(T)``,
    the smallest constant current that fires within the T steps, with target 1 for the label's
    neurons and 0 for every other one (the label code itself), so the label's neurons are pushed
    above the firing level and the others below it. Like CE it sees only the top layer's own current
    (C2: no other layer's gradient changes).
    """
    logits = v_top.mean(0)
    if check_top_loss(kind) == "ce":
        if population > 1:
            logits = logits.reshape(len(logits), -1, population).mean(2)
        return F.cross_entropy(logits, y, reduction="sum")
    target = label_code(y, logits.shape[1] // population, 1, population)[0].to(logits.dtype)
    level = neuron.firing_current(v_top.shape[0])
    return F.binary_cross_entropy_with_logits(logits - level, target, reduction="sum")


# ---------------------------------------------------------------- shared MLP plumbing
def make_neuron(v_th: float, tau: float = 2.0, model: str = "lif", surrogate: str = "atan") -> SpikingNeuron:
    """A Type 1 / Type 2 population: hard reset to 0 (eq. 1), LIF (eq. 2) or IF (eq. 10)."""
    return SpikingNeuron(NeuronParams(model=model, tau=tau, v_th=v_th, v_reset=0.0, reset=HARD), surrogate)


def repeat_time(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Static input presented at every step: (B, ...) -> (T, B, ...)."""
    return x.unsqueeze(0).expand(timesteps, *x.shape)


def label_code(y: torch.Tensor, num_classes: int, timesteps: int, population: int = 1) -> torch.Tensor:
    """Spike code s_hat of the target (App. E.2.1): one-hot, repeated over T -> (T, B, C·P).

    ``population`` P > 1 (snncc's option, not in the paper) gives each class a block of P
    consecutive neurons that all fire for it: the one-hot code with every entry repeated P times."""
    code = F.one_hot(y, num_classes).float()
    if population > 1:
        code = code.repeat_interleave(population, dim=1)
    return code.unsqueeze(0).expand(timesteps, -1, -1)


def cosine_predict(counts: torch.Tensor, population: int = 1) -> torch.Tensor:
    """Sec. 4.3 inference: argmax_j cos(spike counts, label code j) for (B, C·P) counts.

    The codes are the label codes summed over T, i.e. T times :func:`label_code`'s rows. All
    have the same norm, so the rule is the argmax of each class's summed block of P counts
    (of the counts themselves for the paper's one-hot codes, P = 1): the same rule as the
    exported graph's readout (:meth:`snncc.ir.ops.Readout.predict`).
    It is computed by that readout (integer block sums, so ties break alike: lowest class).
    """
    scores = Readout("count", population).predict(counts.detach().cpu().numpy())
    return torch.as_tensor(scores, device=counts.device)


def firing_rates(spikes: dict) -> dict:
    """{name: mean spike probability per neuron per step} for logging."""
    return {name: float(s.detach().mean()) for name, s in spikes.items()}


def weight_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(vec(a), vec(b)) in float64: App. F.4's W-Theta alignment (0 for a zero tensor)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))


# ---------------------------------------------------------------- the method
class BSD(TrainingMethod):
    """BSD on a paired architecture (Type 1 forward path + Type 2 backward path, criterion C1).

    The pairing is the architecture's: each paired model (:class:`~snncc.models.mlp.BSDMLP`, ``BSDCNN``,
    ``BSDRNN``, ``BSDAutoencoder``) runs both paths in one pass with every synapse input detached and
    returns one local loss per weight layer (``training_losses``), built from this module's losses.
    Local losses are clipped per layer (``model.local_clipping``)."""

    name, variant = Method.BSD, Variant.PAIRED

    def losses(self, model, x, y, **context):
        return model.training_losses(x, y)


REGISTER = [(BSD(), (ModelKind.MLP, ModelKind.CNN, ModelKind.RNN, ModelKind.AUTOENCODER))]
