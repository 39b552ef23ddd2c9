"""The spiking MLPs (App. E.2.1) and their ReLU twin.

* :class:`BSDMLP` -- feedforward (Type 1, W) and backward (Type 2, Theta) paths trained by BSD
  (the losses are :mod:`snncc.training.methods.bsd`'s);
* :class:`BPTTMLP` -- the same feedforward path alone (trained end to end: BPTT, :mod:`snncc.training.methods.bptt`);
* :class:`ANNMLP` -- the same architecture with ReLU units (the "BP on ANN" baseline).

The feedforward path is one ``nn.Sequential`` (``build_forward_path``) of ``TimeDistributed(Flatten)``,
``SpikingNeuron`` and ``TimeDistributed(Linear)``, what the exporter traces.
"""
from __future__ import annotations

import torch
from torch import nn

from snncc.models.ann import ANNBase, identity, relu
from snncc.models.layers import TimeDistributed
from snncc.training.methods.bsd import (check_population, check_reco_pairs, check_same_weight, check_top_loss,
                                        interlayer_loss, label_code, make_neuron, same_label, top_loss,
                                        weight_cosine)


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


def _expand(t, index):
    """(T, n_distinct, ...) rows -> (T, B, ...) per sample (``index`` None: already per sample)."""
    return t if t is None or index is None else t.index_select(1, index)


class BSDMLP(nn.Module):
    """Feedforward (W) and backward (Theta) spiking MLPs trained by mutual distillation.

    ``sizes`` = [n_1, ..., n_L] including the input (n_1 = flattened input) and the
    label code (n_L = classes x ``population``); App. E.2.1 uses [784, 1024, 1024, 512, 256, 10].
    ``population`` P: output neurons per class (:func:`~snncc.training.methods.bsd.label_code`; 1 = the paper's).
    """

    local_clipping = True  # per-layer gradient clipping: a global norm would couple layers (C2)

    def __init__(self, sizes, timesteps: int = 4, v_th: float = 0.2, v_th_backward: float = 0.1,
                 tau: float = 2.0, neuron_model: str = "lif", surrogate: str = "atan", lam: float = 0.6,
                 interlayer: str = "reco", temperature: float = 0.1, share_label_path: bool = True,
                 top: str = "ce", reco_pairs: str = "all", reco_same_weight: float = 1.0, population: int = 1):
        super().__init__()
        self.top = check_top_loss(top)
        self.reco_pairs = check_reco_pairs(reco_pairs)
        self.reco_same_weight = check_same_weight(reco_pairs, reco_same_weight)
        self.share_label_path = bool(share_label_path)
        if len(sizes) < 2:
            raise ValueError(f"BSD needs at least an input and an output layer, got sizes {list(sizes)}")
        self.sizes, self.timesteps = [int(n) for n in sizes], int(timesteps)
        self.population = check_population(population, self.sizes[-1])
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
        code = label_code(labels, self.sizes[-1] // self.population, self.timesteps, self.population)
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

    def _align(self, v: torch.Tensor, target: torch.Tensor, rows=None, cols=None, same=None) -> torch.Tensor:
        return interlayer_loss(self.interlayer, v, target.detach(), self.lam, self.temperature, rows, cols,
                               self.reco_pairs, same, self.reco_same_weight)

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
        same = None if self.reco_pairs == "all" and self.reco_same_weight == 1.0 else same_label(y)
        losses = {f"forward layer {i} (W{i - 1})": self._align(v[i - 1], vb[i], cols=index, same=same)
                  for i in range(2, big_l)}
        losses[f"forward layer {big_l} (W{big_l - 1})"] = top_loss(self.top, v[-1], y, self.forward_path[-1].params,
                                                                   self.population)
        for i in range(1, big_l):
            losses[f"backward layer {i} (Theta{i})"] = self._align(vb[i], v[i - 1], rows=index, same=same)
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


class BPTTMLP(nn.Module):
    """``sizes`` = [n_1, ..., n_L] as for :class:`~snncc.training.methods.bsd.BSDMLP`."""

    local_clipping = False  # one global gradient norm, the usual choice for BPTT

    def __init__(self, sizes, timesteps: int = 4, v_th: float = 0.2, tau: float = 2.0,
                 neuron_model: str = "lif", surrogate: str = "atan"):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least an input and an output layer, got sizes {list(sizes)}")
        self.sizes, self.timesteps = [int(n) for n in sizes], int(timesteps)
        self.forward_path = build_forward_path(self.sizes, lambda: make_neuron(v_th, tau, neuron_model, surrogate))

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Inference: (T, B, *input) -> top-layer spikes (T, B, n_L)."""
        return self.forward_path(x_seq)

    def named_weight_layers(self) -> list:
        return [(f"forward layer {i + 1} (W{i})", m) for i, m in enumerate(forward_weights(self.forward_path), 1)]

    def forward_layers(self, x_seq: torch.Tensor):
        """(currents of the weight layers [v_2..v_L], {"s1".."sL": spikes}) of one pass, graph kept through
        every layer (what end-to-end methods differentiate)."""
        v, s = run_forward_path(self.forward_path, x_seq, detach=False)
        return v[1:], {f"s{i}": si for i, si in enumerate(s, 1)}


class ANNMLP(ANNBase):
    """The MLP of :class:`~snncc.training.methods.bsd.BSDMLP` with ReLU units (no bias, like BSD)."""

    def __init__(self, sizes, timesteps: int = 4):
        super().__init__()
        if len(sizes) < 2:
            raise ValueError(f"an MLP needs at least an input and an output layer, got sizes {list(sizes)}")
        self.sizes, self.timesteps = [int(n) for n in sizes], int(timesteps)
        path = build_forward_path(self.sizes, relu)
        path[-1] = identity()
        self.ann_path = path

    def named_weight_layers(self) -> list:
        lin = [m.module for m in list(self.ann_path)[2::2]]
        return [(f"forward layer {i + 1} (W{i})", m) for i, m in enumerate(lin, 1)]
