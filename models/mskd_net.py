"""MSKD's training-only modules beside the student: auxiliary ANN heads (Table 7) and the
reconstruction decoder (Table 14), wrapped with the student in :class:`MSKDNet`. Only the student is
saved as the model and exported."""
from __future__ import annotations

import torch
from torch import nn

from snncc.models.layers import TimeDistributed
from snncc.models.resnet import SpikingResNet


class AuxHead(nn.Module):
    """ANN adapter + prediction head (Table 7) on a block output averaged over time.

    What the adapter sees. The paper does not spell out whether the adapter runs per time step
    or on the time-averaged block output; the text and tables point to the average:

    * Sec. 5: "Each head is implemented as a lightweight ANN adapter that maps the spiking
      feature Z_{l_m} into logits h_m : Z_{l_m} -> y_m ... where y_m in R^C is the student
      prediction over C classes at the m-th head" -- one prediction per sample, from an ANN;
    * Table 7 lists plain ``Conv2d`` / ``BatchNorm2d`` / ``BatchNorm1d`` on (B, C, H, W)
      maps, whereas Table 14 / App. A.5, where the paper does mean per-step processing,
      says so explicitly: "a compact time-distributed decoder", input "(T, B, C, H', W')",
      "Temporal BN", "predicts a per-step reconstruction".

    So the adapter reads the firing-rate (SEW / Spike) or mean-membrane (MS) map
    ``Z.mean(0)``, the same temporal average the student's own readout applies. This is also
    the cheap order: running the adapter per step would cost T times the compute.
    """

    def __init__(self, in_channels: int, channels: int, hidden: int, num_classes: int):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.01)  # noqa: E731
        self.adapter = nn.Sequential(
            nn.Conv2d(in_channels, channels, 7, 2, 3, bias=False), nn.BatchNorm2d(channels), act(),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels), act())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, hidden),
                                  nn.BatchNorm1d(hidden), act(), nn.Linear(hidden, num_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # (T, B, C, H, W) -> rate map -> logits. sum(0) / T is z.mean(0) (bit for bit), but its backward hands the
        # student a broadcast view of the (B, C, H, W) gradient instead of materialising a (T, B, C, H, W)
        # quotient first (mean's backward), which saved ~1.4 ms per step for the first head at width 0.25.
        return self.head(self.adapter(z.sum(0) / z.shape[0]))


class Reconstruction(nn.Module):
    """Time-distributed decoder of the stem features back to the input (Table 14)."""

    def __init__(self, channels: int, in_channels: int, factor: int, out_size):
        super().__init__()
        mid = max(1, channels // 2)
        up = (nn.ConvTranspose2d(channels, mid, 4, 2, 1) if factor == 2 else
              nn.ConvTranspose2d(channels, mid, 3, 1, 1))
        self.up, self.bn = TimeDistributed(up), TimeDistributed(nn.BatchNorm2d(mid))
        self.proj = TimeDistributed(nn.Conv2d(mid, in_channels, 3, 1, 1))
        self.out_size = tuple(out_size)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        # Per step, as Table 14 specifies (T*B images, BN statistics over all of them), computed in
        # channels-last layout: the same operations and parameters as the NCHW TimeDistributed path
        # (outputs agree to float rounding, tests/test_mskd_perf.py), but oneDNN runs these convolutions
        # with few output channels (C -> C/2 -> C_in = 1 or 3) about twice as fast in NHWC on CPU.
        t, b = f.shape[:2]
        x = f.reshape(t * b, *f.shape[2:]).contiguous(memory_format=torch.channels_last)
        x = self.proj.module(torch.relu(self.bn.module(self.up.module(x))))
        x = x[..., :self.out_size[0], :self.out_size[1]].contiguous()
        return x.reshape(t, b, *x.shape[1:])


class MSKDNet(nn.Module):
    """Training wrapper: ``student`` (exported) + auxiliary ``heads`` and ``recon`` (training only)."""

    def __init__(self, student: SpikingResNet, positions=(), adapter_channels=128, width=1.0, recon=False):
        super().__init__()
        self.student = student
        self.positions = [int(p) for p in positions]
        chans = student.block_channels()
        k = max(4, int(round(adapter_channels * width)))
        hidden = max(8, int(round(512 * width)))
        self.heads = nn.ModuleList(AuxHead(chans[p - 1], k, hidden, student.num_classes) for p in self.positions)
        self.recon = None
        if recon:
            factor = student.input_size[0] // student.stem_feature_size[0]
            self.recon = Reconstruction(student.stem_channels, student.stem.conv.module.in_channels,
                                        2 if factor >= 2 else 1, student.input_size)

    def forward(self, x_seq: torch.Tensor):
        """(T, B, C, H, W) -> (final logits, [head logits], reconstruction or None, per-block mean rates)."""
        out, stem, blocks = self.student.forward_features(x_seq)
        heads = [h(blocks[p - 1]) for h, p in zip(self.heads, self.positions)]
        recon = self.recon(stem) if self.recon is not None else None
        rates = torch.stack([b.detach().mean() for b in blocks])
        return self.student.logits(out), heads, recon, rates
