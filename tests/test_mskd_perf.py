"""MSKD's cost-saving implementations compute exactly the paper's operations: the channels-last
reconstruction module equals the plain time-distributed NCHW decoder (Table 14), the auxiliary
heads read the time average (Table 7) with mean's gradient, and `bench mskd --threads` restores
torch's thread count."""
import pytest
import torch
import torch.nn.functional as F

from snncc.bench.mskd_bench import bench_mskd
from snncc.training.mskd import AuxHead, MSKDConfig, Reconstruction, build_net


def _reference_recon(r: Reconstruction, f):
    """Table 14 written out: per step (T*B images), NCHW, the module's own parameters."""
    t, b = f.shape[:2]
    up, bn, proj = r.up.module, r.bn.module, r.proj.module
    y = F.conv_transpose2d(f.reshape(t * b, *f.shape[2:]), up.weight, up.bias, up.stride, up.padding)
    y = F.batch_norm(y, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    y = F.conv2d(torch.relu(y), proj.weight, proj.bias, padding=1)
    y = y[..., :r.out_size[0], :r.out_size[1]]
    return y.reshape(t, b, *y.shape[1:])


@pytest.mark.parametrize("channels,in_channels,factor,size", [(16, 1, 1, 28), (8, 3, 2, 32), (6, 3, 2, 15)])
def test_channels_last_reconstruction_equals_the_nchw_decoder(channels, in_channels, factor, size):
    torch.manual_seed(0)
    # float64, so that the layouts' different summation orders stay far below the tolerance
    r = Reconstruction(channels, in_channels, factor, (size, size)).train().double()
    side = -(-size // factor)
    f = (torch.rand(2, 5, channels, side, side) < 0.3).double().requires_grad_()
    target = torch.rand(2, 5, in_channels, size, size, dtype=torch.float64)
    out = r(f)
    ref = _reference_recon(r, f)
    assert out.shape == ref.shape == (2, 5, in_channels, size, size) and out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    params = [f, *r.parameters()]
    got = torch.autograd.grad(F.mse_loss(out, target), params)
    want = torch.autograd.grad(F.mse_loss(ref, target), params)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-12)
    assert r.bn.module.num_batches_tracked == 1  # training-mode BN over all T*B maps (temporal BN)
    # float32 (as trained): equal to float rounding
    r32, f32 = r.float(), f.detach().float()
    torch.testing.assert_close(r32(f32), _reference_recon(r32, f32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("timesteps", [2, 3])
def test_aux_head_reads_the_time_average(timesteps):
    torch.manual_seed(0)
    head = AuxHead(4, 8, 16, 10).train()
    z = torch.rand(timesteps, 6, 4, 14, 14, requires_grad=True)
    out = head(z)
    ref_in = z.detach().clone().requires_grad_()
    ref = head.head(head.adapter(ref_in.mean(0)))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # sum / T is mean bit for bit
    g = torch.randn_like(out)
    (gz,) = torch.autograd.grad(out, z, g)
    (gref,) = torch.autograd.grad(ref, ref_in, g)
    torch.testing.assert_close(gz, gref, rtol=0, atol=0)
    assert torch.equal(gz[0], gz[-1])  # every step gets the same 1/T share


def test_mskd_net_runs_heads_on_block_outputs_and_recon_on_stem():
    torch.manual_seed(0)
    net = build_net(MSKDConfig(method="mskd", width=0.125, timesteps=2)).train()
    x_seq = net.student.encode(torch.rand(3, 1, 28, 28))
    _, heads, recon, _ = net(x_seq)
    _, stem, blocks = net.student.forward_features(x_seq)  # BN in train mode: same batch, same statistics
    for h, p, logits in zip(net.heads, net.positions, heads):
        torch.testing.assert_close(logits, h(blocks[p - 1]))
    torch.testing.assert_close(recon, _reference_recon(net.recon, stem), rtol=1e-5, atol=1e-5)


def test_bench_threads_option_restores_torch_threads():
    before = torch.get_num_threads()
    res = bench_mskd(width=0.0625, timesteps=1, batch_size=2, steps=1, threads=1)
    assert res["threads"] == 1 and torch.get_num_threads() == before
    for m in ("direct", "kd", "mskd"):
        assert res[f"{m}_cpu_ms_per_step"] > 0
    assert res["mskd_vs_kd_cpu_time"] == pytest.approx(res["mskd_cpu_ms_per_step"] / res["kd_cpu_ms_per_step"])
