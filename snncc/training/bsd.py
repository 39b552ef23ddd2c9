"""Bidirectional spike-based distillation (BSD) for MLPs (Lv et al., Sec. 4, Alg. 1).

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
from torch import nn

from snncc.neuron import HARD, NeuronParams
from snncc.training.layers import SpikingNeuron, TimeDistributed

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


def reco_loss(v: torch.Tensor, v_hat: torch.Tensor, lam: float, rows=None, cols=None) -> torch.Tensor:
    """Eq. 7 (ReCo): sum_k (1 - C_kk)^2 + lam * sum_{k != j} max(0, C_kj)^2.

    ``v_hat`` is the target; the caller detaches it. Summed (not averaged) over
    the batch as in the paper. ``v``/``v_hat`` are (B, D) or time-major (T, B, D).
    ``rows`` / ``cols`` (optional (B,) index tensors) say that ``v`` / ``v_hat``
    hold only distinct samples and sample k is row ``rows[k]`` / ``cols[k]``;
    the loss is then exactly that of the expanded batch (see BSDMLP).
    """
    c = _gather(affinity(v, v_hat), rows, cols)
    diag = torch.diagonal(c)
    off = c.masked_fill(torch.eye(len(c), dtype=torch.bool, device=c.device), 0.0)
    return ((1.0 - diag) ** 2).sum() + lam * (off.clamp(min=0.0) ** 2).sum()


def _reco_grad_v(v: torch.Tensor, v_hat: torch.Tensor, lam: float) -> torch.Tensor:
    """Eqs. 15-16: rows dL/dv_k for (B, D) voltages."""
    norm = v.norm(dim=1, keepdim=True)
    u, u_hat = v / norm, v_hat / v_hat.norm(dim=1, keepdim=True)
    c = u @ u_hat.T
    coef = 2.0 * lam * c.clamp(min=0.0)  # off-diagonal weights of eq. 15
    coef.diagonal().copy_(-2.0 * (1.0 - c.diagonal()))  # diagonal weight of eq. 15
    # eq. 16: dC_kj/dv_k = (u_hat_j - C_kj u_k) / ||v_k||, weighted and summed over j
    return (coef @ u_hat - (coef * c).sum(1, keepdim=True) * u) / norm


def reco_grad_closed_form(v: torch.Tensor, v_hat: torch.Tensor, s_prev: torch.Tensor,
                          lam: float) -> torch.Tensor:
    """Eq. 17: dL/dW = sum_k (dL/dv_k) s_{i-1,k}^T for v = W s_prev, as a (D, N) matrix.

    Takes (B, D) voltages with (B, N) spikes, or time-major (T, B, D) / (T, B, N)
    tensors flattened as in training, where the outer products also sum over T.
    """
    if v.dim() == 2:
        return _reco_grad_v(v, v_hat, lam).T @ s_prev
    t, b, d = v.shape
    g = _reco_grad_v(flatten_time(v), flatten_time(v_hat), lam).reshape(b, t, d)
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
                    temperature: float = 0.1, rows=None, cols=None) -> torch.Tensor:
    """The local alignment loss between basal ``v`` and apical target ``v_hat``: (B, D) rows or
    time-major (T, B, D) currents flattened per sample; ``rows``/``cols`` as in :func:`reco_loss`."""
    if name == "reco":
        return reco_loss(v, v_hat, lam, rows, cols)
    if name == "mse":
        return mse_loss(v, v_hat, rows, cols)
    if name == "infonce":
        return infonce_loss(v, v_hat, temperature, rows, cols)
    raise ValueError(f"unknown inter-layer loss {name!r} (choose from {', '.join(INTERLAYER_LOSSES)})")


# ---------------------------------------------------------------- top-layer loss
TOP_LOSSES = ("ce", "firing")


def check_top_loss(kind: str) -> str:
    """``kind`` if it names a top loss, else ValueError listing them."""
    if kind not in TOP_LOSSES:
        raise ValueError(f"unknown top loss {kind!r} (choose from {', '.join(TOP_LOSSES)})")
    return kind


def top_loss(kind: str, v_top: torch.Tensor, y: torch.Tensor, neuron: NeuronParams) -> torch.Tensor:
    """The top layer's loss on its (T, B, C) currents, summed over the batch (eq. 9); ``neuron``: the top
    population's parameters.

    ``"ce"`` is the paper's: cross-entropy on the time-averaged currents v_L. It depends
    only on differences between classes, so the common level of the currents is left
    free, while the deployed readout counts spikes: a class is seen only if its current
    reaches the firing level, and two classes that both fire every step tie. Under AdamW
    the level drifts (docs/results.md) and the spike readout loses samples.

    ``"firing"`` (snncc's addition, not in the paper) is the spike readout's own
    condition as a loss: a logistic loss per class on ``v_L,c - neuron.firing_current(T)``,
    the smallest constant current that fires within the T steps, with target 1 for the label and 0 for every other
    class, so the label's neuron is pushed above the firing level and the others below
    it. Like CE it sees only the top layer's own current (C2: no other layer's
    gradient changes).
    """
    logits = v_top.mean(0)
    if check_top_loss(kind) == "ce":
        return F.cross_entropy(logits, y, reduction="sum")
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    level = neuron.firing_current(v_top.shape[0])
    return F.binary_cross_entropy_with_logits(logits - level, target, reduction="sum")


# ---------------------------------------------------------------- shared MLP plumbing
def make_neuron(v_th: float, tau: float = 2.0, model: str = "lif", surrogate: str = "atan") -> SpikingNeuron:
    """A Type 1 / Type 2 population: hard reset to 0 (eq. 1), LIF (eq. 2) or IF (eq. 10)."""
    return SpikingNeuron(NeuronParams(model=model, tau=tau, v_th=v_th, v_reset=0.0, reset=HARD), surrogate)


def build_forward_path(sizes, neuron_fn) -> nn.Sequential:
    """Flatten -> SN (encoder, v_1 = x: Alg. 1 line 8) -> [Linear -> SN] per layer (eq. 4).

    No bias: eq. 4 is v_i = W_{i-1} s_{i-1}, and eq. 17 has no bias term.
    """
    layers = [TimeDistributed(nn.Flatten()), neuron_fn()]
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [TimeDistributed(nn.Linear(n_in, n_out, bias=False)), neuron_fn()]
    return nn.Sequential(*layers)


def run_forward_path(path: nn.Sequential, x_seq: torch.Tensor, detach: bool):
    """Run ``path`` layer by layer; returns (currents [v_1..v_L], spikes [s_1..s_L]), each (T, B, D_i).

    ``detach=True`` cuts the graph at every layer's input spikes (C2), so a loss on
    v_i reaches only W_{i-1}. The values equal ``path(x_seq)`` either way.
    """
    mods = list(path)
    v = mods[0](x_seq)
    currents, spikes = [v], [mods[1](v)]
    for linear, neuron in zip(mods[2::2], mods[3::2]):
        s_in = spikes[-1].detach() if detach else spikes[-1]
        currents.append(linear(s_in))
        # with the graph cut at every layer input, no loss differentiates through the spikes:
        # skip recording the neuron's (surrogate) graph altogether
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            spikes.append(neuron(currents[-1]))
    return currents, spikes


def forward_weights(path: nn.Sequential) -> list:
    """The Linear modules W_1..W_{L-1} of a forward path."""
    return [m.module for m in list(path)[2::2]]


def repeat_time(x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Static input presented at every step: (B, ...) -> (T, B, ...)."""
    return x.unsqueeze(0).expand(timesteps, *x.shape)


def label_code(y: torch.Tensor, num_classes: int, timesteps: int) -> torch.Tensor:
    """Spike code s_hat of the target (App. E.2.1): one-hot, repeated over T -> (T, B, C)."""
    return F.one_hot(y, num_classes).float().unsqueeze(0).expand(timesteps, -1, -1)


def cosine_predict(counts: torch.Tensor) -> torch.Tensor:
    """Sec. 4.3 inference: argmax_j cos(spike counts, label code j) for (B, C) counts.

    The codes are one-hot spike trains summed over T, i.e. T * e_j; for these the
    rule equals argmax of counts, but the cosine form keeps richer codes possible.
    """
    codes = torch.eye(counts.shape[1], dtype=counts.dtype, device=counts.device)
    return (F.normalize(counts, dim=1, eps=_EPS) @ F.normalize(codes, dim=1).T).argmax(1)


def _expand(t, index):
    """(T, n_distinct, ...) rows -> (T, B, ...) per sample (``index`` None: already per sample)."""
    return t if t is None or index is None else t.index_select(1, index)


def firing_rates(spikes: dict) -> dict:
    """{name: mean spike probability per neuron per step} for logging."""
    return {name: float(s.detach().mean()) for name, s in spikes.items()}


def weight_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(vec(a), vec(b)) in float64: App. F.4's W-Theta alignment (0 for a zero tensor)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-12))


# ---------------------------------------------------------------- the BSD model
class BSDMLP(nn.Module):
    """Feedforward (W) and backward (Theta) spiking MLPs trained by mutual distillation.

    ``sizes`` = [n_1, ..., n_L] including the input (n_1 = flattened input) and the
    label code (n_L = classes); App. E.2.1 uses [784, 1024, 1024, 512, 256, 10].
    """

    local_clipping = True  # per-layer gradient clipping: a global norm would couple layers (C2)

    def __init__(self, sizes, timesteps: int = 4, v_th: float = 0.2, v_th_backward: float = 0.1,
                 tau: float = 2.0, neuron_model: str = "lif", surrogate: str = "atan", lam: float = 0.6,
                 interlayer: str = "reco", temperature: float = 0.1, share_label_path: bool = True,
                 top: str = "ce"):
        super().__init__()
        self.top = check_top_loss(top)
        self.share_label_path = bool(share_label_path)
        if len(sizes) < 2:
            raise ValueError(f"BSD needs at least an input and an output layer, got sizes {list(sizes)}")
        self.sizes, self.timesteps = [int(n) for n in sizes], int(timesteps)
        self.lam, self.interlayer, self.temperature = lam, interlayer, temperature
        type1 = lambda: make_neuron(v_th, tau, neuron_model, surrogate)  # noqa: E731
        type2 = lambda: make_neuron(v_th_backward, tau, neuron_model, surrogate)  # noqa: E731
        self.forward_path = build_forward_path(self.sizes, type1)
        n = self.sizes
        # theta[i-1] is Theta_i: s'_{i+1} (n_{i+1}) -> v'_i (n_i), i = 1..L-1 (eq. 5)
        self.theta = nn.ModuleList(nn.Linear(n[i], n[i - 1], bias=False) for i in range(1, len(n)))
        # backward_neurons[i-2] are the Type 2 neurons of layer i, i = 2..L (layer 1's
        # Type 2 neurons would feed nothing, so only their current v'_1 is computed)
        self.backward_neurons = nn.ModuleList(type2() for _ in range(1, len(n)))

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Inference: (T, B, *input) -> top-layer spikes (T, B, n_L)."""
        return self.forward_path(x_seq)

    def named_weight_layers(self) -> list:
        """[(name, module)] for every W_i and Theta_i, named as in the loss dict."""
        big_l = self.num_layers
        fwd = [(f"forward layer {i + 1} (W{i})", m) for i, m in enumerate(forward_weights(self.forward_path), 1)]
        bwd = [(f"backward layer {i} (Theta{i})", self.theta[i - 1]) for i in range(1, big_l)]
        return fwd + bwd

    def label_path(self, y: torch.Tensor):
        """Eq. 5 / Alg. 1 lines 16-20 on the distinct labels of ``y`` -> (index, currents, spikes).

        The backward path is a function of the label alone: its input is the label
        code (eq. 5, v'_L = s_hat), and every step after it (Theta_i, the Type 2
        neurons) acts on each sample's row independently. Samples with equal labels
        therefore have identical Type 2 currents and spikes, and the path is run once
        per distinct label present (at most n_L rows instead of B). ``currents`` /
        ``spikes`` are indexed by layer (1-based; None where absent) with one row per
        distinct label, and sample k's row is ``index[k]``. The losses expand them
        through this index, so values and gradients equal those of the per-sample
        path (``share_label_path=False`` runs that, one row per sample, index None).
        """
        if self.share_label_path:
            labels, index = torch.unique(y, sorted=True, return_inverse=True)
        else:
            labels, index = y, None
        big_l = self.num_layers
        currents, spikes = [None] * (big_l + 1), [None] * (big_l + 1)
        code = label_code(labels, self.sizes[-1], self.timesteps)
        currents[big_l] = code.to(self.theta[-1].weight.dtype)  # v'_L = s_hat
        spikes[big_l] = self.backward_neurons[-1](currents[big_l])
        for i in range(big_l - 1, 0, -1):
            currents[i] = self.theta[i - 1](spikes[i + 1].detach())  # detach: C2
            if i > 1:
                with torch.no_grad():  # spikes only feed the next (detached) layer
                    spikes[i] = self.backward_neurons[i - 2](currents[i])
        return index, currents, spikes

    def backward_pass(self, y: torch.Tensor):
        """Eq. 5 per sample: currents and spikes (T, B, n_i), indexed by layer (1-based; None where absent)."""
        index, currents, spikes = self.label_path(y)
        if index is None:
            return currents, spikes
        return [_expand(t, index) for t in currents], [_expand(t, index) for t in spikes]

    def _align(self, v: torch.Tensor, target: torch.Tensor, rows=None, cols=None) -> torch.Tensor:
        return interlayer_loss(self.interlayer, v, target.detach(), self.lam, self.temperature, rows, cols)

    def training_losses(self, x_seq: torch.Tensor, y: torch.Tensor):
        """One combined pass of both paths -> ({layer name: local loss}, info).

        Alg. 1 lines 24-36: L_i = ReCo(v_i, v_hat_i = v'_i) trains W_{i-1} (eq. 7);
        L'_i = ReCo(v'_i, v_hat'_i = v_i) trains Theta_i (eq. 18), including Theta_1,
        whose target is the input v_1 = x; W_{L-1} learns from cross-entropy on the
        time-averaged top current v_L (eq. 9). ``info`` holds the top spikes
        ("output"), every spike tensor ("spikes", per sample: accuracy, firing
        rates, the binary check) and each weight's own current ("currents", keyed
        like the losses; the Type 2 ones with one row per distinct label).
        """
        v, s = run_forward_path(self.forward_path, x_seq, detach=True)  # v[i-1] = v_i
        index, vb, sb = self.label_path(y)
        big_l = self.num_layers
        losses = {f"forward layer {i} (W{i - 1})": self._align(v[i - 1], vb[i], cols=index)
                  for i in range(2, big_l)}
        losses[f"forward layer {big_l} (W{big_l - 1})"] = top_loss(self.top, v[-1], y, self.forward_path[-1].params)
        for i in range(1, big_l):
            losses[f"backward layer {i} (Theta{i})"] = self._align(vb[i], v[i - 1], rows=index)
        spikes = {f"s{i}": s[i - 1] for i in range(1, big_l + 1)}
        spikes.update({f"s'{i}": _expand(sb[i], index) for i in range(2, big_l + 1)})
        # each weight's own output current, to blame the right layer when a loss goes NaN
        own = dict(zip((name for name, _ in self.named_weight_layers()), v[1:] + vb[1:big_l]))
        return losses, {"output": s[-1], "spikes": spikes, "currents": own}

    @torch.no_grad()
    def weight_alignment(self) -> dict:
        """App. F.4: cos(vec(W_i), vec(Theta_i^T)) for each weight layer i = 1..L-1.

        W_i maps layer i to i+1 and Theta_i maps layer i+1 back to i, so Theta_i^T
        has W_i's shape. Near 0 means the two paths did not become symmetric (C1).
        """
        return {f"W{i}": weight_cosine(w.weight, th.weight.T)
                for i, (w, th) in enumerate(zip(forward_weights(self.forward_path), self.theta), 1)}
