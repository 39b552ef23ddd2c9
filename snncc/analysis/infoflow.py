"""Information-flow analyses of spiking ResNets (MSKD paper, Sec. 4.2, Fig. 2 and Fig. 4).

* :func:`block_firing_rates` -- mean firing rate of every residual block's spiking
  populations, per time step (all ``SpikingNeuron`` modules inside the block, read by
  forward hooks), and :func:`plot_firing_rate_heatmap` (Fig. 4 style: models/methods x blocks,
  or blocks x time steps for one model).
* :func:`information_flow` -- the reconstruction-based proxy of ``I(X; Z_l)`` across depth
  (Fig. 2): for each block l a small decoder ``D`` is trained to reconstruct the input from
  the (time-averaged) block output of the frozen network, and
  ``I(X; Z_l) >= H(X) - H(X | Z_l)`` is approximated, per input dimension, under a Gaussian
  error model by ``0.5 * log2(var(X) / MSE_l)`` bits (0 when the decoder can do no better than
  the mean image). Depth is normalised to [0, 1]. :func:`plot_information_flow` draws it.

Plots are written as PNG with matplotlib's Agg backend; every function returns plain numbers
(numpy arrays / dicts) as well.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from snncc.fileio import atomic_path
from snncc.models.layers import SpikingNeuron


def _encode(model, x):
    return model.encode(x) if hasattr(model, "encode") else x


@torch.no_grad()
def block_firing_rates(model, x: torch.Tensor, batch_size: int = 128) -> np.ndarray:
    """(n_blocks, T) mean firing rate of all spiking populations inside each residual block."""
    model.eval()
    blocks = model.blocks()
    sums = [None] * len(blocks)
    counts = [0] * len(blocks)
    hooks = []
    for i, block in enumerate(blocks):
        for m in block.modules():
            if isinstance(m, SpikingNeuron):
                def hook(_m, _inp, out, i=i):
                    r = out.detach().flatten(2).sum(dim=(1, 2)).double()  # (T,)
                    sums[i] = r if sums[i] is None else sums[i] + r
                    counts[i] += out[0].numel()
                hooks.append(m.register_forward_hook(hook))
    try:
        for s in range(0, len(x), batch_size):
            model(_encode(model, x[s:s + batch_size]))
    finally:
        for h in hooks:
            h.remove()
    # counts[i] accumulated per call per population: elements of one time step
    return np.stack([(sums[i] / counts[i]).numpy() for i in range(len(blocks))])


def _save_fig(fig, path):
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def plot_firing_rate_heatmap(rates, path, title: str = "firing rate per block") -> Path:
    """``rates``: a dict {model/method name: (n_blocks,) or (n_blocks, T) rates} -> rows = names,
    columns = blocks (time-averaged); or one (n_blocks, T) array -> rows = blocks, columns = steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(rates, dict):
        names = list(rates)
        rows = [np.asarray(r, dtype=float).reshape(len(r), -1).mean(1) for r in rates.values()]
        width = max(len(r) for r in rows)
        grid = np.full((len(rows), width), np.nan)
        for i, r in enumerate(rows):
            grid[i, :len(r)] = r
        ylabels, xlabel, ylabel = names, "residual block", ""
    else:
        grid = np.asarray(rates, dtype=float)
        ylabels, xlabel, ylabel = [str(i + 1) for i in range(grid.shape[0])], "time step", "residual block"
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * grid.shape[1] + 2), max(2, 0.35 * grid.shape[0] + 1.5)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0)
    ax.set_yticks(range(len(ylabels)), ylabels)
    ax.set_xticks(range(grid.shape[1]), [str(i + 1) for i in range(grid.shape[1])])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="spikes / neuron / step")
    _save_fig(fig, path)
    plt.close(fig)
    return Path(path)


class _Decoder(nn.Module):
    def __init__(self, channels, out_channels, size, hidden=32):
        super().__init__()
        self.size = tuple(size)
        self.inp = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU())
        self.out = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, out_channels, 3, padding=1))

    def forward(self, z):
        h = nn.functional.interpolate(self.inp(z), size=self.size, mode="bilinear", align_corners=False)
        return self.out(h)


@torch.no_grad()
def _features(model, x, batch_size):
    model.eval()
    per_block = None
    for s in range(0, len(x), batch_size):
        _, _, outs = model.forward_features(_encode(model, x[s:s + batch_size]))
        feats = [o.mean(0).float() for o in outs]  # time-averaged block output (rate / mean membrane)
        per_block = [[f] for f in feats] if per_block is None else [p + [f] for p, f in zip(per_block, feats)]
    return [torch.cat(p) for p in per_block]


def information_flow(model, x_train: torch.Tensor, x_test: torch.Tensor, blocks=None, steps: int = 200,
                     batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> dict:
    """Reconstruction proxy of I(X; Z_l) for the frozen ``model`` (a SpikingResNet).

    Returns {"block": [1-based indices], "depth": [normalised to (0, 1]], "mse": [...],
    "bits_per_dim": [0.5 * log2(var(X_test) / mse)]}."""
    x_train, x_test = torch.as_tensor(x_train).float(), torch.as_tensor(x_test).float()
    n_blocks = len(model.blocks())
    blocks = list(range(1, n_blocks + 1)) if blocks is None else [int(b) for b in blocks]
    for b in blocks:
        if not 1 <= b <= n_blocks:
            raise ValueError(f"block {b} is outside 1..{n_blocks}")
    f_train, f_test = _features(model, x_train, 256), _features(model, x_test, 256)
    var = float(x_test.var())
    out = {"block": [], "depth": [], "mse": [], "bits_per_dim": []}
    g = torch.Generator().manual_seed(seed)
    for b in blocks:
        torch.manual_seed(seed)
        zt, zv = f_train[b - 1], f_test[b - 1]
        dec = _Decoder(zt.shape[1], x_train.shape[1], x_train.shape[2:])
        opt = torch.optim.Adam(dec.parameters(), lr=lr)
        for _ in range(steps):
            idx = torch.randint(0, len(zt), (min(batch_size, len(zt)),), generator=g)
            loss = nn.functional.mse_loss(dec(zt[idx]), x_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            mse = float(nn.functional.mse_loss(dec(zv), x_test))
        out["block"].append(b)
        out["depth"].append(b / n_blocks)
        out["mse"].append(mse)
        out["bits_per_dim"].append(0.5 * float(np.log2(var / max(mse, 1e-12))))
    return out


def plot_information_flow(results: dict, path, title: str = "I(X; Z_l) proxy across depth") -> Path:
    """``results``: {label: information_flow(...) result} -> one line per label over normalised depth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for label, r in results.items():
        ax.plot(r["depth"], r["bits_per_dim"], marker="o", label=label)
    ax.set_xlabel("normalised depth l / L")
    ax.set_ylabel("0.5 log2(var X / MSE)  [bits/dim]")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_fig(fig, path)
    plt.close(fig)
    return Path(path)
