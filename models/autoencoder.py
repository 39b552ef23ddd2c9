"""BSD for a convolutional autoencoder (Sec. 4.4, App. E.2.4), with a BP-trained ReLU baseline.

Architecture (channels are multiplied by ``width``, each at least 1)::

    encoder: conv3x3/s2 C->128, conv3x3/s2 128->256, conv3x3/s2 256->512   (each + BN)
    decoder: [nearest-upsample, conv3x3/s1] 512->256, 256->128, 128->C      (each + BN)

Every stride-2 conv has padding 1, so a side n becomes ceil(n / 2):
28 -> 14 -> 7 -> 4 and 8 -> 4 -> 2 -> 1. Each upsampling returns exactly to the
size of the matching encoder map (``nn.Upsample(size=...)``): a plain x2 for the
8x8 digits (1 -> 2 -> 4 -> 8), and 4 -> 7 -> 14 -> 28 for 28x28 images (the one
4 -> 7 step is nearest resampling rather than an exact doubling).

Layers and the Type 1 / Type 2 pairing. The 6 convs define 7 neuron layers
(1-based, bottom to top) with shapes, for a C x H x W image and the encoder sizes
H -> H1 -> H2 -> H3::

    layer 1: (C,    H,  W )   the image        v_1  = x   (Type 1 basal input)
    layer 2: (128,  H1, W1)   after encoder conv 1
    layer 3: (256,  H2, W2)   after encoder conv 2
    layer 4: (512,  H3, W3)   bottleneck, after encoder conv 3
    layer 5: (256,  H2, W2)   after decoder block 1
    layer 6: (128,  H1, W1)   after decoder block 2
    layer 7: (C,    H,  W )   reconstruction     v'_7 = x   (Type 2 basal input)

The Type 1 (feedforward, bottom-up) path is the autoencoder itself: W_i maps
layer i to layer i+1, i.e. W_1..W_3 are the strided encoder convs and W_4..W_6
the upsample+conv decoder blocks. The Type 2 (backward, top-down) path has its
own weights Theta_i mapping layer i+1 back to layer i, built as the *inverse
spatial operation* of W_i ("where one path uses a strided convolution, the other
utilizes an upsampling layer, and vice versa"):

    Theta_6, Theta_5, Theta_4 (layer 7->6, 6->5, 5->4): conv3x3/s2 + BN  (W_4..W_6 upsample)
    Theta_3, Theta_2, Theta_1 (layer 4->3, 3->2, 2->1): upsample + conv3x3/s1 + BN  (W_1..W_3 stride)

so the Type 1 and Type 2 populations of every layer have identical (C, H, W)
(``layer_shapes`` / the tests check it). The source image x is the basal input of
both the bottom Type 1 neurons (v_1 = x, s_1 = SN(x)) and the top Type 2 neurons
(v'_7 = x, s'_7 = SN(x): the top Type 2 layer is a transducer turning the image
into spikes). Every conv, in both paths, reads binary spikes only (C4), and is
followed by batch normalisation as in the paper. Convs have no bias (BN has one).

Local losses (each trains one weight layer; inputs spikes and targets detached, C2):

* W_{i-1}, i = 2..6:   L_i  = FFT-ReCo(v_i,  sg(v'_i))   (basal v_i, apical target v'_i)
* W_6 (top, layer 7):  L_7  = MSE(mean_t v_7, x)         (top loss: basal vs apical v'_7 = x)
* Theta_i, i = 1..6:   L'_i = FFT-ReCo(v'_i, sg(v_i))    (Theta_1's target is v_1 = x)

where a layer's "voltage" v is its synaptic current (after BN), shaped
(T, B, C, H, W). FFT-ReCo (:func:`fft_reco_loss`) splits both voltages into a
low- and a high-frequency part with a centred circular mask of normalised radius
``freq_cutoff_ratio`` on the 2-D spectrum over (H, W), and sums ReCo on the low
parts (weight ``lam_low``) and ReCo on the high parts (``lam_high``); each part
is flattened per sample to T*C*H*W as in :mod:`snncc.training.methods.bsd`.

Output. The reconstruction is the time-averaged top Type 1 voltage mean_t v_7
(BN in eval mode). Metrics: test MSE per pixel and PSNR = 10 log10(1 / MSE) of the
whole test set (pixels in [0, 1]), next to the mean-training-image baseline.
The paper reports FID; FID needs Inception-v3 weights, which are not available
offline here, so it is not computed.

Baseline (``method="bp"``, "ANN-BP" of Table 3): the Type 1 path with ReLU in place
of every spiking population (BN kept, the top layer linear), fed the analog image
once (no time steps), trained end to end by backprop on MSE(output, x).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from snncc.models.layers import TimeDistributed
from snncc.training.methods.bsd import make_neuron, repeat_time
from snncc.training.methods.bsd_fft import fft_reco_loss, recon_mse

ENCODER_CHANNELS = (128, 256, 512)


# ---------------------------------------------------------------- shapes
def ae_channels(width: float = 1.0, base=ENCODER_CHANNELS) -> list:
    return [max(1, int(round(c * width))) for c in base]


def ae_layer_shapes(input_shape, width: float = 1.0) -> list:
    """(C, H, W) of layers 1..7 (see the module docstring)."""
    c0, h, w = (int(n) for n in input_shape)
    ch = ae_channels(width)
    sizes = [(h, w)]
    for _ in ch:
        h, w = (h + 1) // 2, (w + 1) // 2  # conv3x3 / stride 2 / padding 1
        sizes.append((h, w))
    enc = [(c0, *sizes[0])] + [(c, *s) for c, s in zip(ch, sizes[1:])]
    return enc + enc[-2::-1][:-1] + [(c0, *sizes[0])]


def _strided(c_in, c_out):
    return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out)]


def _upconv(c_in, c_out, size, bn=True):
    return [nn.Upsample(size=tuple(size), mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1, bias=not bn),
            *([nn.BatchNorm2d(c_out)] if bn else [])]


def _type1_synapses(shapes, top_bn: bool = False) -> list:
    """W_1..W_6 as plain nn.Sequential modules (layer i -> layer i+1).

    W_6 (the reconstruction layer) ends in BN only if ``top_bn``; otherwise its conv has a bias.
    """
    out = []
    for i in range(1, 7):
        (c_in, _, _), (c_out, h, w) = shapes[i - 1], shapes[i]
        mods = _strided(c_in, c_out) if i <= 3 else _upconv(c_in, c_out, (h, w), bn=(i < 6 or top_bn))
        out.append(nn.Sequential(*mods))
    return out


def _check_input_shape(input_shape) -> tuple:
    if len(input_shape) != 3:
        raise ValueError(f"the autoencoder needs (C, H, W) inputs, got shape {tuple(input_shape)}")
    return tuple(int(n) for n in input_shape)


# ---------------------------------------------------------------- models
class BSDAutoencoder(nn.Module):
    """Type 1 (W: the autoencoder) and Type 2 (Theta: inverse operations) spiking paths.

    See the module docstring for the exact layer pairing and losses.
    """

    def __init__(self, input_shape, width: float = 1.0, timesteps: int = 8, v_th: float = 0.4,
                 tau: float = 2.0, freq_cutoff_ratio: float = 0.6, lam_low: float = 0.005,
                 lam_high: float = 0.01, neuron_model: str = "lif", surrogate: str = "atan",
                 top_bn: bool = False):
        super().__init__()
        self.input_shape = _check_input_shape(input_shape)
        self.timesteps, self.width = int(timesteps), float(width)
        self.cutoff, self.lam_low, self.lam_high = float(freq_cutoff_ratio), float(lam_low), float(lam_high)
        self.shapes = ae_layer_shapes(self.input_shape, width)  # shapes[i - 1] = layer i
        neuron = lambda: make_neuron(v_th, tau, neuron_model, surrogate)  # noqa: E731
        # W[i - 1] = W_i: layer i -> i+1
        self.W = nn.ModuleList(TimeDistributed(m) for m in _type1_synapses(self.shapes, top_bn))
        theta = []
        for i in range(1, 7):  # Theta_i: layer i+1 -> layer i, the inverse spatial op of W_i
            (c_lo, h, w), (c_hi, _, _) = self.shapes[i - 1], self.shapes[i]
            theta.append(TimeDistributed(nn.Sequential(*(_upconv(c_hi, c_lo, (h, w)) if i <= 3
                                                          else _strided(c_hi, c_lo)))))
        self.theta = nn.ModuleList(theta)  # theta[i - 1] = Theta_i
        self.type1_neurons = nn.ModuleList(neuron() for _ in range(7))  # layers 1..7
        self.type2_neurons = nn.ModuleList(neuron() for _ in range(7))  # layers 1..7

    @property
    def num_layers(self) -> int:
        return 7

    def layer_shapes(self) -> list:
        return list(self.shapes)

    def named_weight_layers(self) -> list:
        fwd = [(f"forward layer {i + 1} (W{i})", self.W[i - 1]) for i in range(1, 7)]
        bwd = [(f"backward layer {i} (Theta{i})", self.theta[i - 1]) for i in range(1, 7)]
        return fwd + bwd

    def type1_pass(self, x_seq: torch.Tensor, detach: bool = True):
        """Currents v[1..7] and spikes s[1..7] of the Type 1 path (lists indexed by layer, [0] unused)."""
        v, s = [None, x_seq], [None, None]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            s[1] = self.type1_neurons[0](x_seq)
        for i in range(1, 7):
            inp = s[i].detach() if detach else s[i]
            v.append(self.W[i - 1](inp))
            with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):  # cut anyway (C2)
                s.append(self.type1_neurons[i](v[i + 1]))
        return v, s

    def type2_pass(self, x_seq: torch.Tensor):
        """Currents v'[1..7] and spikes s'[1..7] of the Type 2 path (v'_7 = x)."""
        vb, sb = [None] * 8, [None] * 8
        vb[7] = x_seq
        with torch.no_grad():
            sb[7] = self.type2_neurons[6](x_seq)
        for i in range(6, 0, -1):
            vb[i] = self.theta[i - 1](sb[i + 1].detach())
            with torch.no_grad():  # spikes only feed the next (detached) layer
                sb[i] = self.type2_neurons[i - 1](vb[i])
        return vb, sb

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> time-averaged top Type 1 voltage (B, C, H, W)."""
        v, _ = self.type1_pass(repeat_time(x, self.timesteps), detach=True)
        return v[7].mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    def _align(self, v, target):
        return fft_reco_loss(v, target.detach(), self.cutoff, self.lam_low, self.lam_high)

    def training_losses(self, x: torch.Tensor, y=None):
        """({weight layer name: local loss}, info) for a (B, C, H, W) batch of images (``y`` unused: the
        target is the image)."""
        x_seq = repeat_time(x, self.timesteps)
        v, s = self.type1_pass(x_seq, detach=True)
        vb, sb = self.type2_pass(x_seq)
        out = v[7].mean(0)
        losses = {f"forward layer {i} (W{i - 1})": self._align(v[i], vb[i]) for i in range(2, 7)}
        losses["forward layer 7 (W6)"] = recon_mse(out, x)
        for i in range(1, 7):
            losses[f"backward layer {i} (Theta{i})"] = self._align(vb[i], v[i])
        spikes = {f"s{i}": s[i] for i in range(1, 8)}
        spikes.update({f"s'{i}": sb[i] for i in range(1, 8)})
        own = {f"forward layer {i} (W{i - 1})": v[i] for i in range(2, 8)}
        own.update({f"backward layer {i} (Theta{i})": vb[i] for i in range(1, 7)})
        return losses, {"output": out, "spikes": spikes, "currents": own}


class BPAutoencoder(nn.Module):
    """The Type 1 path of :class:`BSDAutoencoder` with ReLU units, trained by backprop (ANN-BP)."""

    def __init__(self, input_shape, width: float = 1.0, top_bn: bool = False):
        super().__init__()
        self.input_shape = _check_input_shape(input_shape)
        self.width = float(width)
        self.shapes = ae_layer_shapes(self.input_shape, width)
        self.W = nn.ModuleList(_type1_synapses(self.shapes, top_bn))

    def layer_shapes(self) -> list:
        return list(self.shapes)

    def named_weight_layers(self) -> list:
        return [(f"forward layer {i + 1} (W{i})", self.W[i - 1]) for i in range(1, 7)]

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, m in enumerate(self.W):
            h = m(h)
            if i < len(self.W) - 1:
                h = F.relu(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)
