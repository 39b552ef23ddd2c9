"""Spiking ResNets for snncc: Spike-ResNet, SEW-ResNet and MS-ResNet (MSKD paper, Fig. 1).

All three are multi-step modules on (T, B, C, H, W) tensors built from snncc's
:class:`~snncc.models.layers.SpikingNeuron` (the one neuron definition) and
:class:`~snncc.models.layers.TimeDistributed` convs / batch norms / pools, so
``snncc.export.export(model, torch.zeros(T, 1, C, H, W))`` maps them onto the
spike-graph IR with batch norm folded into the synapses. Input is direct-encoded:
the analog image is repeated over T (:meth:`SpikingResNet.encode`).

Block structures (``x`` is what flows between blocks)::

    spike  (fully spiking)   x = sn2( bn2(conv2(sn1(bn1(conv1(x))))) + shortcut(x) )
           shortcut: identity spikes, or a conv-BN whose *current* enters sn2 too; the
           add has sn2 as its only consumer, so the exporter fuses it: both currents
           converge on ONE population.
    sew    (spike-element-wise, hybrid)   x = g( sn2(bn2(conv2(...))), shortcut(x) )
           g = ADD (spike counts flow into the next synapses), AND (out * s) or
           IAND ((1 - out) * s); shortcut: identity or conv-BN-LIF (spikes).
           AND / IAND have no spike-graph op: exporting them raises ExportError.
    ms     (membrane shortcut, hybrid)   x = bn2(conv2(sn2(bn1(conv1(sn1(x)))))) + shortcut(x)
           the residual stream carries pre-spike (analog) values; the downsample
           conv-BN reads that analog stream directly.

Bottleneck blocks (depths 50/101) use 1x1-3x3-1x1 convs with expansion 4, in the
same three patterns. Stems: ``imagenet`` = 7x7/2 conv-BN-LIF + 3x3/2 max pool;
``small`` = 3x3/1 conv-BN-LIF (28x28 / 32x32 inputs). MS stems stop before the
LIF (each MS block starts with its own LIF).

Readout. The network ends with a fixed ``AvgPool2d`` whose kernel is the final
feature-map size (computed from ``input_size``: adaptive pooling is not an IR op),
flatten and a fully connected layer, then either

* ``readout="spike"`` (default for Spike-ResNet): the FC current drives a LIF
  population; the exported graph has a ``count`` readout and is fully spiking.
  For training, :meth:`SpikingResNet.logits` turns the spike rate into logits
  ``spike_gain * count / T`` (the argmax -- the prediction -- is the count argmax).
* ``readout="mean"`` (default for SEW / MS, as in their papers): the FC current
  averaged over T are the logits; the export has an analog ``mean`` readout.

``forward`` returns the per-step output (T, B, classes) -- spikes or currents --
so that export and module agree; use :meth:`logits` for a (B, classes) tensor.
"""
from __future__ import annotations

import re

import torch
from torch import fx, nn

from snncc.neuron import NeuronParams
from snncc.models.layers import SpikingNeuron, TimeDistributed

FAMILIES = ("spike", "sew", "ms")
DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
          50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3))}
STEMS = ("imagenet", "small")
READOUTS = ("spike", "mean")
SEW_CONNECTS = ("add", "and", "iand")
MODEL_NAMES = tuple(f"{f}-resnet{d}" for f in FAMILIES for d in DEPTHS)
ANN_NAMES = tuple(f"resnet{d}" for d in DEPTHS)
_NAME = re.compile(r"^(?:(spike|sew|ms)-)?resnet(\d+)$")


class ModelError(ValueError):
    """An unknown model name or an invalid architecture argument (one-line message)."""


def _exporter_error(message: str) -> Exception:
    from snncc.export import ExportError  # late import: the exporter imports models.layers
    return ExportError(message)


def parse_name(name: str) -> tuple[str | None, int]:
    """``'sew-resnet50'`` -> ``('sew', 50)``; ``'resnet18'`` (the plain ANN) -> ``(None, 18)``."""
    m = _NAME.match(str(name).lower())
    if not m or int(m.group(2)) not in DEPTHS:
        raise ModelError(f"unknown model {name!r} (choose from {', '.join(MODEL_NAMES + ANN_NAMES)})")
    return m.group(1), int(m.group(2))


def _ch(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def _td_conv(cin, cout, k, stride=1):
    return TimeDistributed(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False))


def _td_bn(c):
    return TimeDistributed(nn.BatchNorm2d(c))


class _NeuronFactory:
    def __init__(self, params: NeuronParams, surrogate: str, detach_reset: bool):
        self.params, self.surrogate, self.detach_reset = params, surrogate, detach_reset

    def __call__(self) -> SpikingNeuron:
        return SpikingNeuron(self.params, surrogate_fn=self.surrogate, detach_reset=self.detach_reset)


# ---------------------------------------------------------------- blocks
class _Block(nn.Module):
    """Shared constructor: the conv-BN chain (``conv{i}``/``bn{i}``/``sn{i}``) and shortcut."""

    expansion = 1

    def __init__(self, family, cin, planes, stride, neuron, connect="add"):
        super().__init__()
        self.family, self.connect = family, connect
        self.out_channels = planes * self.expansion
        if stride != 1 or cin != self.out_channels:
            layers = [_td_conv(cin, self.out_channels, 1, stride), _td_bn(self.out_channels)]
            if family == "sew":  # SEW's downsample emits spikes (conv-BN-SN)
                layers.append(neuron())
            self.downsample = nn.Sequential(*layers)
        else:
            self.downsample = None

    def _shortcut(self, x):
        return x if self.downsample is None else self.downsample(x)

    def _merge(self, out, x):
        """Combine the last conv-BN current ``out`` with the block input ``x``."""
        if self.family == "spike":
            return self.sn_last(out + self._shortcut(x))  # one population integrates both
        if self.family == "ms":
            return out + self._shortcut(x)  # membrane shortcut (analog)
        s, idt = self.sn_last(out), self._shortcut(x)
        if self.connect == "add":
            return s + idt
        if isinstance(s, fx.Proxy):
            op = "AND (out * shortcut)" if self.connect == "and" else "IAND ((1 - out) * shortcut)"
            raise _exporter_error(f"SEW connect function {op} has no spike-graph equivalent "
                                  f"(only ADD is exportable)")
        return s * idt if self.connect == "and" else (1.0 - s) * idt


class BasicBlock(_Block):
    expansion = 1

    def __init__(self, family, cin, planes, stride, neuron, connect="add"):
        super().__init__(family, cin, planes, stride, neuron, connect)
        self.conv1, self.bn1 = _td_conv(cin, planes, 3, stride), _td_bn(planes)
        self.conv2, self.bn2 = _td_conv(planes, planes, 3), _td_bn(planes)
        self.sn1, self.sn2 = neuron(), neuron()

    @property
    def sn_last(self):
        return self.sn2

    def forward(self, x):
        if self.family == "ms":
            out = self.bn1(self.conv1(self.sn1(x)))
            out = self.bn2(self.conv2(self.sn2(out)))
            return self._merge(out, x)
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self._merge(out, x)


class Bottleneck(_Block):
    expansion = 4

    def __init__(self, family, cin, planes, stride, neuron, connect="add"):
        super().__init__(family, cin, planes, stride, neuron, connect)
        self.conv1, self.bn1 = _td_conv(cin, planes, 1), _td_bn(planes)
        self.conv2, self.bn2 = _td_conv(planes, planes, 3, stride), _td_bn(planes)
        self.conv3, self.bn3 = _td_conv(planes, self.out_channels, 1), _td_bn(self.out_channels)
        self.sn1, self.sn2, self.sn3 = neuron(), neuron(), neuron()

    @property
    def sn_last(self):
        return self.sn3

    def forward(self, x):
        if self.family == "ms":
            out = self.bn1(self.conv1(self.sn1(x)))
            out = self.bn2(self.conv2(self.sn2(out)))
            out = self.bn3(self.conv3(self.sn3(out)))
            return self._merge(out, x)
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self._merge(out, x)


class Stem(nn.Module):
    """conv-BN(-LIF)(-maxpool). ``forward`` returns (output, features before the pool)."""

    def __init__(self, family, in_channels, channels, kind, neuron):
        super().__init__()
        k, s = (7, 2) if kind == "imagenet" else (3, 1)
        self.conv, self.bn = _td_conv(in_channels, channels, k, s), _td_bn(channels)
        self.sn = neuron() if family != "ms" else None
        self.pool = TimeDistributed(nn.MaxPool2d(3, 2, 1)) if kind == "imagenet" else None
        self.reduction = s  # spatial downscale of the pre-pool features (for reconstruction)

    def forward(self, x):
        x = self.bn(self.conv(x))
        if self.sn is not None:
            x = self.sn(x)
        feat = x
        if self.pool is not None:
            x = self.pool(x)
        return x, feat


class SpikingResNet(nn.Module):
    """A Spike/SEW/MS ResNet on (T, B, C, H, W) direct-encoded inputs (see the module docstring).

    Residual blocks are ``layer{1..4}.{i}``; :meth:`blocks` lists them in depth order
    and :meth:`block_channels` their output channels (the MSKD head positions index this list).
    """

    def __init__(self, family, depth, num_classes, in_channels=3, input_size=(224, 224), stem="imagenet",
                 width=1.0, timesteps=4, neuron_params=NeuronParams(), surrogate="sigmoid",
                 detach_reset=True, readout=None, spike_gain=5.0, connect="add"):
        super().__init__()
        if family not in FAMILIES:
            raise ModelError(f"unknown ResNet family {family!r} (choose from {', '.join(FAMILIES)})")
        if depth not in DEPTHS:
            raise ModelError(f"unsupported depth {depth} (choose from {', '.join(map(str, DEPTHS))})")
        if stem not in STEMS:
            raise ModelError(f"unknown stem {stem!r} (choose from {', '.join(STEMS)})")
        readout = readout or ("spike" if family == "spike" else "mean")
        if readout not in READOUTS:
            raise ModelError(f"unknown readout {readout!r} (choose from {', '.join(READOUTS)})")
        if connect not in SEW_CONNECTS or (connect != "add" and family != "sew"):
            raise ModelError(f"connect {connect!r} is only for SEW-ResNet (one of {', '.join(SEW_CONNECTS)})")
        if not (isinstance(width, (int, float)) and width > 0):
            raise ModelError(f"width must be > 0, got {width!r}")
        if int(timesteps) < 1:
            raise ModelError(f"timesteps must be >= 1, got {timesteps!r}")
        self.family, self.depth, self.readout, self.timesteps = family, depth, readout, int(timesteps)
        self.num_classes, self.spike_gain, self.connect = num_classes, float(spike_gain), connect
        self.input_size = (int(input_size[0]), int(input_size[1]))
        neuron = _NeuronFactory(neuron_params, surrogate, detach_reset)
        kind, counts = DEPTHS[depth]
        block_cls = BasicBlock if kind == "basic" else Bottleneck

        c0 = _ch(64, width)
        self.stem = Stem(family, in_channels, c0, stem, neuron)
        h, w = self.input_size
        if stem == "imagenet":
            h, w = _conv_out(h, 7, 2, 3), _conv_out(w, 7, 2, 3)
            self.stem_feature_size = (h, w)
            h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
        else:
            self.stem_feature_size = (h, w)
        self.stem_channels = c0
        cin = c0
        for i, (n, planes) in enumerate(zip(counts, (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                s = stride if j == 0 else 1
                blocks.append(block_cls(family, cin, _ch(planes, width), s, neuron, connect))
                cin = blocks[-1].out_channels
                h, w = _conv_out(h, 3, s, 1), _conv_out(w, 3, s, 1)  # the strided 3x3 (pad 1) conv
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        if h < 1 or w < 1:
            raise ModelError(f"input size {self.input_size} is too small for {family}-resnet{depth}")
        self.final_size = (h, w)
        self.features = cin
        self.sn_final = neuron() if family == "ms" else None  # MS: spike the membrane stream once more
        self.pool = TimeDistributed(nn.AvgPool2d((h, w)))
        self.fc = TimeDistributed(nn.Linear(cin, num_classes))
        self.sn_out = neuron() if readout == "spike" else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if self.sn_out is not None:
            # Start the output population just below threshold: a LIF driven by a constant v_th
            # approaches it from below and never fires, an IF driven by v_th / (T + 1) neither; the
            # surrogate gradient is then large, whereas at 0 the outputs are silent and barely learn.
            p = neuron_params
            nn.init.constant_(self.fc.module.bias, p.v_th if p.leaky else p.v_th / (self.timesteps + 1))

    # -- structure -------------------------------------------------------
    @property
    def name(self) -> str:
        return f"{self.family}-resnet{self.depth}"

    def blocks(self) -> list:
        return [b for i in range(1, 5) for b in getattr(self, f"layer{i}")]

    def block_channels(self) -> list:
        return [b.out_channels for b in self.blocks()]

    # -- running -----------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Direct encoding: (B, C, H, W) -> (T, B, C, H, W), the image at every step."""
        return x.unsqueeze(0).expand(self.timesteps, *x.shape).contiguous()

    def _head(self, x):
        if self.sn_final is not None:
            x = self.sn_final(x)
        x = self.fc(torch.flatten(self.pool(x), 2))
        return self.sn_out(x) if self.sn_out is not None else x

    def forward(self, x):
        """(T, B, C, H, W) -> per-step output (T, B, classes): spikes ('spike') or currents ('mean')."""
        x, _ = self.stem(x)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return self._head(x)

    def forward_features(self, x):
        """Like forward, also returning the stem features (before the pool) and every block's output."""
        x, stem = self.stem(x)
        outs = []
        for block in self.blocks():
            x = block(x)
            outs.append(x)
        return self._head(x), stem, outs

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """Per-step output (T, B, K) -> logits (B, K): mean current, or spike_gain * spike rate."""
        return out.mean(0) * (self.spike_gain if self.readout == "spike" else 1.0)

    def architecture(self) -> dict:
        return {"name": self.name, "readout": self.readout, "timesteps": self.timesteps,
                "final_size": list(self.final_size), "blocks": len(self.blocks())}


# ---------------------------------------------------------------- ANN
class _AnnBlock(nn.Module):
    def __init__(self, kind, cin, planes, stride):
        super().__init__()
        exp = 1 if kind == "basic" else 4
        self.out_channels = planes * exp
        if kind == "basic":
            self.body = nn.Sequential(nn.Conv2d(cin, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
                                      nn.ReLU(inplace=True), nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
                                      nn.BatchNorm2d(planes))
        else:
            self.body = nn.Sequential(nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(True),
                                      nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes),
                                      nn.ReLU(True), nn.Conv2d(planes, self.out_channels, 1, bias=False),
                                      nn.BatchNorm2d(self.out_channels))
        self.downsample = None
        if stride != 1 or cin != self.out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(cin, self.out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(self.out_channels))

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.body(x) + idt)


class AnnResNet(nn.Module):
    """Plain (ReLU) ResNet on (B, C, H, W): the ANN teacher / baseline (``--method ann``)."""

    def __init__(self, depth, num_classes, in_channels=3, stem="imagenet", width=1.0):
        super().__init__()
        if depth not in DEPTHS:
            raise ModelError(f"unsupported depth {depth} (choose from {', '.join(map(str, DEPTHS))})")
        if stem not in STEMS:
            raise ModelError(f"unknown stem {stem!r} (choose from {', '.join(STEMS)})")
        kind, counts = DEPTHS[depth]
        self.depth, self.num_classes = depth, num_classes
        c0 = _ch(64, width)
        k, s = (7, 2) if stem == "imagenet" else (3, 1)
        stem_layers = [nn.Conv2d(in_channels, c0, k, s, k // 2, bias=False), nn.BatchNorm2d(c0), nn.ReLU(True)]
        if stem == "imagenet":
            stem_layers.append(nn.MaxPool2d(3, 2, 1))
        self.stem = nn.Sequential(*stem_layers)
        cin, layers = c0, []
        for i, (n, planes) in enumerate(zip(counts, (64, 128, 256, 512))):
            for j in range(n):
                layers.append(_AnnBlock(kind, cin, _ch(planes, width), 2 if (i > 0 and j == 0) else 1))
                cin = layers[-1].out_channels
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- factory
def build_resnet(name: str, num_classes: int, in_channels: int = 3, stem: str = "imagenet", width: float = 1.0,
                 timesteps: int = 4, input_size=(224, 224), neuron_params: NeuronParams | None = None,
                 surrogate: str = "sigmoid", detach_reset: bool = True, readout: str | None = None,
                 spike_gain: float = 5.0, connect: str = "add") -> nn.Module:
    """Build ``{spike,sew,ms}-resnet{18,34,50,101}`` (a :class:`SpikingResNet`) or ``resnet{N}`` (an
    :class:`AnnResNet`). ``input_size`` (H, W) fixes the final AvgPool2d kernel; ``connect`` picks
    SEW's connect function (add/and/iand); ``neuron_params`` defaults to LIF tau=2, v_th=1, hard reset."""
    family, depth = parse_name(name)
    if family is None:
        return AnnResNet(depth, num_classes, in_channels, stem, width)
    return SpikingResNet(family, depth, num_classes, in_channels, input_size, stem, width, timesteps,
                         neuron_params or NeuronParams(), surrogate, detach_reset, readout, spike_gain, connect)
