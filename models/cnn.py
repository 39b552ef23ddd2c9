"""BSD for convolutional networks (App. E.2.2), with a BPTT baseline on the same CNN.

Feedforward path (Type 1 neurons), exported as is::

    x -> [conv3x3 -> BN -> LIF] -> pool -> [conv -> BN -> LIF] -> pool -> ... (5 convs)
      -> pool -> flatten -> FC -> LIF (top)

with channels (128, 128, 256, 256, 512) times ``width`` (at least 1 channel each).
It is one flat ``nn.Sequential`` of ``TimeDistributed(Conv2d / BatchNorm2d /
MaxPool2d / Flatten / Linear)`` and ``SpikingNeuron`` modules, so the exporter
traces it and folds every batch norm into the conv before it. Convs have no bias
(eq. 4; the folded BN supplies one).

Layers. Layer 1 is the input x (v_1 = x). Layer k+1 (k = 1..5) are the neurons
behind conv k, shaped (C_k, H_k, W_k); layer 7 is the top (classes). Unlike the
MLP, x is not passed through a spiking encoder: conv 1 reads the analog image at
every step (direct encoding; the validator notes it and still calls the graph
fully spiking). With the paper's threshold of 1.0 a LIF encoder with tau = 2
would never fire on inputs in [0, 1].

Shapes. Every 3x3 conv has padding 1 (size kept); every 2x2/stride-2 max-pool
pads odd sizes by one (``padding = size % 2``), i.e. it halves with ceil:
32 -> 16 -> 8 -> 4 -> 2 -> 1, 28 -> 14 -> 7 -> 4 -> 2 -> 1, 8 -> 4 -> 2 -> 1 -> 1 -> 1.
So 32x32 and 28x28 inputs (and the 8x8 digits) all end in a 1x1 map and the
flattened vector is 512 * width long, as in the paper. (Padded max-pooling of
non-negative spikes equals ceil-mode pooling, which the exporter does not take.)

Backward path (Type 2 neurons) mirrors it with nearest upsampling as the inverse
of pooling, so Type 2 layer i has exactly the (C, H, W) of Type 1 layer i:

    Theta_6: label code (classes) -> Linear -> reshape (C_5, pooled map) -> upsample to layer 6 -> BN
    Theta_i (i = 2..5): s'_{i+1} -> upsample to layer i's size -> conv3x3 (C_{i} <- C_{i+1}) -> BN
    Theta_1: s'_2 -> conv3x3 (C_in <- C_1)   (its target is the input x itself: no BN, no neuron)

The top Type 2 spikes are the label code itself (s'_L = s_hat, a binary spike
train): with threshold 1.0, a LIF fed the constant code 1.0 never reaches
threshold, so a population there would silence the whole backward path (the MLP's
0.1 threshold makes SN(s_hat) = s_hat anyway).

Losses as in the MLP: ReCo(v_i, v'_i) trains W_{i-1} (i = 2..6), ReCo(v'_i, v_i)
trains Theta_i (i = 1..6; v_1 = x), cross-entropy on the time-averaged top
current trains the FC layer. Currents are flattened per sample to T*C*H*W.
"""
from __future__ import annotations

import torch
from torch import nn

from snncc.training.methods.bsd import (check_population, check_reco_pairs, check_same_weight, check_top_loss,
                                        interlayer_loss, label_code, make_neuron, same_label, top_loss,
                                        weight_cosine)
from snncc.models.ann import ANNBase, identity, relu
from snncc.models.layers import InputNormalize, TimeDistributed

CNN_CHANNELS = (128, 128, 256, 256, 512)


def cnn_channels(width: float = 1.0, base=CNN_CHANNELS) -> list:
    """Channel counts scaled by ``width`` (each at least 1)."""
    return [max(1, int(round(c * width))) for c in base]


def _half(n: int) -> int:
    return (n + 1) // 2


def cnn_layer_shapes(input_shape, channels) -> tuple:
    """([(C, H, W) of layers 1..6], (H, W) of the map after the last pool).

    Layer 1 is the input; layer k+1 is conv k's output (same size as its input map).
    """
    c0, h, w = (int(n) for n in input_shape)
    shapes = [(c0, h, w)]
    for c in channels:
        shapes.append((int(c), h, w))
        h, w = _half(h), _half(w)
    return shapes, (h, w)


def _pool(h: int, w: int) -> nn.MaxPool2d:
    """2x2 / stride 2 max-pool that halves with ceil (odd sizes padded by one)."""
    return nn.MaxPool2d(2, 2, padding=(h % 2, w % 2))


def build_cnn_forward_path(input_shape, num_classes, channels, neuron_fn, top_neuron_fn=None,
                           normalize: bool = False):
    """The flat feedforward Sequential and its block lengths (modules per weight layer).

    Each block ends with its neuron population (``neuron_fn()``); the modules before
    it form the synapse W_{i-1} whose output is the current v_i. ``normalize`` puts an
    :class:`InputNormalize` first ("all images are normalized prior to processing",
    App. E.2.2); its statistics are set from the training data.
    """
    shapes, (ph, pw) = cnn_layer_shapes(input_shape, channels)
    mods, lengths = [], []
    for k, c in enumerate(channels):
        c_in, h, w = shapes[k]
        block = [] if k == 0 else [TimeDistributed(_pool(h, w))]
        if k == 0 and normalize:
            block.append(InputNormalize(c_in, 3))
        block += [TimeDistributed(nn.Conv2d(c_in, c, 3, padding=1, bias=False)),
                  TimeDistributed(nn.BatchNorm2d(c)), neuron_fn()]
        mods += block
        lengths.append(len(block))
    _, h, w = shapes[-1]
    block = [TimeDistributed(_pool(h, w)), TimeDistributed(nn.Flatten()),
             TimeDistributed(nn.Linear(channels[-1] * ph * pw, num_classes, bias=False)),
             (top_neuron_fn or neuron_fn)()]
    mods += block
    lengths.append(len(block))
    return nn.Sequential(*mods), lengths


def run_blocks(path: nn.Sequential, lengths, x_seq: torch.Tensor, detach: bool):
    """Run the path block by block -> (currents [v_2..v_L], spikes [s_2..s_L]).

    ``detach=True`` cuts the graph at each block's input spikes (C2).
    """
    mods = list(path)
    currents, spikes, s, i = [], [], x_seq, 0
    for n in lengths:
        h = s.detach() if (detach and spikes) else s
        for m in mods[i:i + n - 1]:
            h = m(h)
        currents.append(h)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):  # spikes are cut (C2)
            s = mods[i + n - 1](h)
        spikes.append(s)
        i += n
    return currents, spikes


def block_modules(path: nn.Sequential, lengths) -> list:
    """The synapse modules (without the neuron) of each block, unwrapped."""
    mods, out, i = list(path), [], 0
    for n in lengths:
        out.append([m.module if isinstance(m, TimeDistributed) else m for m in mods[i:i + n - 1]])
        i += n
    return out


def _weighted(mods) -> nn.ModuleList:
    """A view of a block's parameterised modules (shares their parameters)."""
    return nn.ModuleList(m for m in mods if any(True for _ in m.parameters(recurse=False)))


def _synapse(mods):
    return next(m for m in mods if isinstance(m, (nn.Conv2d, nn.Linear)))


class _CNNBase(nn.Module):
    """Shared plumbing of the BSD and BPTT CNNs (same forward path)."""

    def _init_forward(self, input_shape, num_classes, width, timesteps, neuron_fn, top_neuron_fn=None,
                      normalize: bool = False):
        if len(input_shape) != 3:
            raise ValueError(f"the CNN needs (C, H, W) inputs, got shape {tuple(input_shape)}")
        self.input_shape, self.num_classes = tuple(int(n) for n in input_shape), int(num_classes)
        self.channels, self.timesteps = cnn_channels(width), int(timesteps)
        self.shapes, self.pooled = cnn_layer_shapes(self.input_shape, self.channels)
        self.forward_path, self.block_lengths = build_cnn_forward_path(
            self.input_shape, self.num_classes, self.channels, neuron_fn, top_neuron_fn, normalize)

    @property
    def input_normalizer(self):
        """The :class:`InputNormalize` at the input, or None."""
        first = self.forward_path[0]
        return first if isinstance(first, InputNormalize) else None

    def present(self, x_seq: torch.Tensor) -> torch.Tensor:
        """The input as the first synapse sees it (normalised if the model normalises), v_1."""
        norm = self.input_normalizer
        return x_seq if norm is None else norm(x_seq)

    @property
    def num_layers(self) -> int:
        return len(self.block_lengths) + 1

    def layer_shapes(self) -> list:
        """(C, H, W) or (classes,) of layers 1..L."""
        return list(self.shapes) + [(self.num_classes,)]

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        """Inference: (T, B, C, H, W) -> top-layer spikes (T, B, classes)."""
        return self.forward_path(x_seq)

    def _forward_layers(self):
        return block_modules(self.forward_path, self.block_lengths)

    def named_forward_layers(self) -> list:
        return [(f"forward layer {i} (W{i - 1})", _weighted(mods)) for i, mods in enumerate(self._forward_layers(), 2)]


class BSDCNN(_CNNBase):
    """Feedforward (W) and backward (Theta) spiking CNNs trained by mutual distillation."""

    local_clipping = True

    def __init__(self, input_shape, num_classes: int, width: float = 1.0, timesteps: int = 4,
                 v_th: float = 1.0, v_th_backward: float = 1.0, tau: float = 2.0, neuron_model: str = "lif",
                 surrogate: str = "atan", lam: float = 0.6, interlayer: str = "reco", temperature: float = 0.1,
                 normalize: bool = False, top: str = "ce", reco_pairs: str = "all", reco_same_weight: float = 1.0,
                 population: int = 1):
        super().__init__()
        self.top = check_top_loss(top)
        # population P: output neurons per class (label_code); the forward path ends in classes x P neurons
        self.population = check_population(population)
        num_classes = int(num_classes) * self.population
        self.reco_pairs = check_reco_pairs(reco_pairs)
        self.reco_same_weight = check_same_weight(reco_pairs, reco_same_weight)
        type1 = lambda: make_neuron(v_th, tau, neuron_model, surrogate)  # noqa: E731
        type2 = lambda: make_neuron(v_th_backward, tau, neuron_model, surrogate)  # noqa: E731
        self._init_forward(input_shape, num_classes, width, timesteps, type1, normalize=normalize)
        self.lam, self.interlayer, self.temperature = lam, interlayer, temperature
        s = self.shapes  # s[i - 1] = (C, H, W) of layer i
        c5, (ph, pw) = self.channels[-1], self.pooled
        theta = []
        for i in range(1, len(s)):  # Theta_i: layer i+1 -> layer i, i = 1..5
            (c_lo, h, w), c_hi = s[i - 1], s[i][0]
            mods = [] if i == 1 else [nn.Upsample(size=(h, w), mode="nearest")]
            mods.append(nn.Conv2d(c_hi, c_lo, 3, padding=1, bias=False))
            if i > 1:
                mods.append(nn.BatchNorm2d(c_lo))
            theta.append(TimeDistributed(nn.Sequential(*mods)))
        _, h6, w6 = s[-1]
        theta.append(TimeDistributed(nn.Sequential(
            nn.Linear(num_classes, c5 * ph * pw, bias=False), nn.Unflatten(1, (c5, ph, pw)),
            nn.Upsample(size=(h6, w6), mode="nearest"), nn.BatchNorm2d(c5))))
        self.theta = nn.ModuleList(theta)  # theta[i - 1] = Theta_i
        # Type 2 neurons of layers 2..L-1 (layer L's spikes are the label code itself)
        self.backward_neurons = nn.ModuleList(type2() for _ in range(2, self.num_layers))

    def named_weight_layers(self) -> list:
        bwd = [(f"backward layer {i} (Theta{i})", self.theta[i - 1]) for i in range(1, self.num_layers)]
        return self.named_forward_layers() + bwd

    def backward_pass(self, y: torch.Tensor):
        """Currents and spikes of the Type 2 path, indexed by layer 1..L (None where absent)."""
        big_l = self.num_layers
        currents, spikes = [None] * (big_l + 1), [None] * (big_l + 1)
        spikes[big_l] = label_code(y, self.num_classes // self.population, self.timesteps, self.population)
        for i in range(big_l - 1, 0, -1):
            currents[i] = self.theta[i - 1](spikes[i + 1].detach())
            if i > 1:
                with torch.no_grad():  # spikes only feed the next (detached) layer
                    spikes[i] = self.backward_neurons[i - 2](currents[i])
        return currents, spikes

    def _align(self, v, target, same=None):
        # time-major (T, B, C*H*W) views: the same per-sample T*C*H*W vectors without a transposed copy
        return interlayer_loss(self.interlayer, v.flatten(2), target.detach().flatten(2),
                               self.lam, self.temperature, pairs=self.reco_pairs, same=same,
                               same_weight=self.reco_same_weight)

    def training_losses(self, x_seq: torch.Tensor, y: torch.Tensor):
        """({layer name: local loss}, info) as :meth:`BSDMLP.training_losses`."""
        cur, spk = run_blocks(self.forward_path, self.block_lengths, x_seq, detach=True)
        v = [None, self.present(x_seq)] + cur  # v[i] = v_i (v_1: the normalised image, if normalised)
        s = [None, None] + spk  # s[i] = s_i (layer 1 is the analog input)
        vb, sb = self.backward_pass(y)
        big_l = self.num_layers
        same = None if self.reco_pairs == "all" and self.reco_same_weight == 1.0 else same_label(y)
        losses = {f"forward layer {i} (W{i - 1})": self._align(v[i], vb[i], same) for i in range(2, big_l)}
        losses[f"forward layer {big_l} (W{big_l - 1})"] = top_loss(self.top, v[big_l], y, self.forward_path[-1].params,
                                                                   self.population)
        for i in range(1, big_l):
            losses[f"backward layer {i} (Theta{i})"] = self._align(vb[i], v[i], same)
        spikes = {f"s{i}": s[i] for i in range(2, big_l + 1)}
        spikes.update({f"s'{i}": sb[i] for i in range(2, big_l)})
        own = {f"forward layer {i} (W{i - 1})": v[i] for i in range(2, big_l + 1)}
        own.update({f"backward layer {i} (Theta{i})": vb[i] for i in range(1, big_l)})
        return losses, {"output": s[big_l], "spikes": spikes, "currents": own}

    @torch.no_grad()
    def weight_alignment(self) -> dict:
        """App. F.4: cos(vec(W_i), vec(Theta_i^T)) per weight layer i = 1..L-1.

        Theta_i^T is the adjoint of Theta_i's synapse: for a conv, in/out channels
        swapped and the kernel flipped (the transposed convolution); for the FC
        layer the matrix transpose.
        """
        out = {}
        for i, mods in enumerate(self._forward_layers(), 1):
            w = _synapse(mods).weight
            th = _synapse(list(self.theta[i - 1].module)).weight
            th_t = th.transpose(0, 1).flip(-1, -2) if th.dim() == 4 else th.T
            if th_t.shape == w.shape:
                out[f"W{i}"] = weight_cosine(w, th_t)
        return out


class BPTTCNN(_CNNBase):
    """The same spiking CNN, forward path alone (trained end to end: BPTT, :mod:`snncc.training.methods.bptt`)."""

    local_clipping = False

    def __init__(self, input_shape, num_classes: int, width: float = 1.0, timesteps: int = 4,
                 v_th: float = 1.0, tau: float = 2.0, neuron_model: str = "lif", surrogate: str = "atan",
                 normalize: bool = False):
        super().__init__()
        self._init_forward(input_shape, num_classes, width, timesteps,
                           lambda: make_neuron(v_th, tau, neuron_model, surrogate), normalize=normalize)

    def named_weight_layers(self) -> list:
        return self.named_forward_layers()

    def forward_layers(self, x_seq: torch.Tensor):
        """(currents of the weight layers [v_2..v_L], {"s2".."sL": spikes}) of one pass, graph kept through
        every layer (what end-to-end methods differentiate)."""
        cur, spk = run_blocks(self.forward_path, self.block_lengths, x_seq, detach=False)
        return cur, {f"s{i}": s for i, s in enumerate(spk, 2)}


def cnn_flat_size(input_shape, width: float = 1.0) -> int:
    """Length of the flattened vector before the FC layer."""
    ch = cnn_channels(width)
    _, (h, w) = cnn_layer_shapes(input_shape, ch)
    return ch[-1] * h * w


class ANNCNN(ANNBase):
    """The CNN of :class:`~snncc.models.cnn.BSDCNN` with ReLU units (BN kept)."""

    def __init__(self, input_shape, num_classes: int, width: float = 1.0, timesteps: int = 4,
                 normalize: bool = False):
        super().__init__()
        self.channels, self.timesteps = cnn_channels(width), int(timesteps)
        self.ann_path, self.block_lengths = build_cnn_forward_path(
            input_shape, num_classes, self.channels, relu, identity, normalize=normalize)

    @property
    def input_normalizer(self):
        first = self.ann_path[0]
        return first if isinstance(first, InputNormalize) else None

    def named_weight_layers(self) -> list:
        blocks = block_modules(self.ann_path, self.block_lengths)
        return [(f"forward layer {i} (W{i - 1})", nn.ModuleList(m for m in mods if list(m.parameters())))
                for i, mods in enumerate(blocks, 2)]


__all__ = ["ANNCNN", "BSDCNN", "BPTTCNN", "CNN_CHANNELS", "build_cnn_forward_path", "cnn_channels", "cnn_layer_shapes",
           "cnn_flat_size", "run_blocks"]
