"""Tests for snncc.data.datasets: real MNIST-like files, synthetic IDX/CIFAR files, error paths."""
import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from snncc.data.datasets import (DATASETS, DatasetError, batches, clear_cache, dataset_info,
                                 load_split)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need_shared(name):
    if not (SHARED_DATA / name / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real {name} files not present under {SHARED_DATA / name}")


# ---------------------------------------------------------------- helpers
def _idx_bytes(arr, magic):
    return struct.pack(f">{1 + arr.ndim}I", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def _write_gz(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload))


def _write_idx(folder, split="train", n=4, n_labels=None, img_magic=2051, size=28):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
    labels = (np.arange(n if n_labels is None else n_labels) % 10).astype(np.uint8)
    prefix = "train" if split == "train" else "t10k"
    _write_gz(folder / f"{prefix}-images-idx3-ubyte.gz", _idx_bytes(images, img_magic))
    _write_gz(folder / f"{prefix}-labels-idx1-ubyte.gz", _idx_bytes(labels, 2049))
    return images, labels


def _cifar_batch(n, label_key=b"labels", n_classes=10, offset=0):
    data = np.zeros((n, 3072), np.uint8)
    data[:, :1024] = 10 + np.arange(n)[:, None] + offset   # red plane
    data[:, 1024:2048] = 100                              # green plane
    data[:, 2048:] = 200                                  # blue plane
    return {b"data": data, label_key: [(i + offset) % n_classes for i in range(n)], b"batch_label": b"x"}


def _dump(path, obj, protocol=2):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def _write_cifar10(root, per_batch=2, n_test=3):
    folder = root / "cifar-10-batches-py"
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _cifar_batch(per_batch, offset=10 * i))
    _dump(folder / "test_batch", _cifar_batch(n_test))
    return folder


# ---------------------------------------------------------------- metadata
def test_names_and_info():
    assert DATASETS == ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100")
    assert dataset_info("mnist").input_shape == (1, 28, 28)
    assert dataset_info("digits").input_shape == (1, 8, 8)
    assert dataset_info("cifar10").input_shape == (3, 32, 32)
    assert dataset_info("cifar100").num_classes == 100
    for name in DATASETS:
        info = dataset_info(name)
        assert info.class_names is None or len(info.class_names) == info.num_classes


def test_unknown_name_lists_known():
    with pytest.raises(DatasetError, match=r"unknown dataset 'svhn'.*digits, mnist, fashion-mnist, cifar10"):
        dataset_info("svhn")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_split("svhn", "train")
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load_split("digits", "val")


# ---------------------------------------------------------------- digits
def test_digits_split_sizes_range_and_determinism():
    xtr, ytr = load_split("digits", "train")
    xte, yte = load_split("digits", "test")
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert 0.0 <= xtr.min() and xtr.max() == 1.0
    xtr2, ytr2 = load_split("digits", "train", data_dir="/does/not/matter")
    np.testing.assert_array_equal(xtr, xtr2)
    np.testing.assert_array_equal(ytr, ytr2)


def test_digits_stratified():
    _, ytr = load_split("digits", "train")
    _, yte = load_split("digits", "test")
    total = np.bincount(np.concatenate([ytr, yte]), minlength=10)
    expected = total * 360 / total.sum()
    assert np.all(np.abs(np.bincount(yte, minlength=10) - expected) <= 1)


def test_limit_is_deterministic_subset():
    x, y = load_split("digits", "train")
    xa, ya = load_split("digits", "train", limit=100, seed=3)
    xb, yb = load_split("digits", "train", limit=100, seed=3)
    xc, _ = load_split("digits", "train", limit=100, seed=4)
    assert xa.shape == (100, 1, 8, 8)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(xa, xc)
    idx = np.sort(np.random.default_rng(3).permutation(len(y))[:100])
    np.testing.assert_array_equal(xa, x[idx])
    assert len(load_split("digits", "test", limit=10_000)[1]) == 360
    with pytest.raises(DatasetError, match="empty"):
        load_split("digits", "test", limit=0)


def test_results_do_not_alias_cache():
    x, y = load_split("digits", "test")
    x[:] = -1
    y[:] = -1
    x2, y2 = load_split("digits", "test")
    assert x2.min() >= 0 and y2.min() >= 0


# ---------------------------------------------------------------- real MNIST / Fashion-MNIST
@pytest.mark.parametrize("name,first_train,first_test", [("mnist", 5, 7), ("fashion-mnist", 9, 9)])
def test_real_mnist_like(name, first_train, first_test):
    _need_shared(name)
    xtr, ytr = load_split(name, "train", data_dir=SHARED_DATA)  # found via the subfolder
    xte, yte = load_split(name, "test", data_dir=SHARED_DATA / name)  # or directly
    assert xtr.shape == (60000, 1, 28, 28) and xte.shape == (10000, 1, 28, 28)
    assert xtr.dtype == np.float32 and ytr.dtype == np.int64
    assert xtr.min() == 0.0 and xtr.max() == 1.0
    assert set(np.unique(ytr)) == set(range(10)) and set(np.unique(yte)) == set(range(10))
    assert ytr[0] == first_train and yte[0] == first_test
    if name == "fashion-mnist":
        assert np.all(np.bincount(ytr) == 6000)


def test_real_mnist_limit():
    _need_shared("mnist")
    xa, ya = load_split("mnist", "train", data_dir=SHARED_DATA, limit=500, seed=7)
    xb, yb = load_split("mnist", "train", data_dir=SHARED_DATA, limit=500, seed=7)
    assert xa.shape == (500, 1, 28, 28)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


# ---------------------------------------------------------------- zero-padded 28x28 sets (NAME-N)
def test_padded_info_and_values(tmp_path):
    images, labels = _write_idx(tmp_path / "fashion-mnist", "test", n=5)
    info = dataset_info("fashion-mnist-32")
    assert info.input_shape == (1, 32, 32) and info.num_classes == 10
    assert info.class_names == dataset_info("fashion-mnist").class_names
    x, y = load_split("fashion-mnist-32", "test", data_dir=tmp_path)
    assert x.shape == (5, 1, 32, 32) and x.dtype == np.float32
    np.testing.assert_array_equal(y, labels)
    # the original pixels at the centre (rows/cols 2..29), exactly the unpadded values; zeros around
    plain, _ = load_split("fashion-mnist", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(x[:, :, 2:30, 2:30], plain)
    np.testing.assert_allclose(x[:, 0, 2:30, 2:30], images / np.float32(255), rtol=1e-6)
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert border.sum() == 32 * 32 - 28 * 28 and np.all(x[:, :, border] == 0.0)
    assert images.any()                     # the centre is not trivially zero
    x40, _ = load_split("fashion-mnist-40", "test", data_dir=tmp_path)
    assert x40.shape == (5, 1, 40, 40) and np.array_equal(x40[:, :, 6:34, 6:34], plain) and np.count_nonzero(x40) == np.count_nonzero(plain)


@pytest.mark.parametrize("name,message", [
    ("mnist-31", r"dataset 'mnist-31': padded size must be an even number in 30\.\.224"),
    ("fashion-mnist-28", r"padded size must be an even number in 30\.\.224 .*got 28"),
    ("mnist-1000", r"got 1000"),
    ("cifar10-40", r"dataset 'cifar10-40': zero-padding \(NAME-N\) applies to mnist and fashion-mnist only"),
    ("digits-16", r"applies to mnist and fashion-mnist only"),
    ("svhn-32", r"unknown dataset 'svhn-32'.*fashion-mnist-32"),
])
def test_padded_bad_names(name, message):
    with pytest.raises(DatasetError, match=message):
        dataset_info(name)
    with pytest.raises(DatasetError, match=message):
        load_split(name, "test")


def test_real_fashion_mnist_32():
    _need_shared("fashion-mnist")
    x, y = load_split("fashion-mnist-32", "test", data_dir=SHARED_DATA)
    plain, y28 = load_split("fashion-mnist", "test", data_dir=SHARED_DATA)
    assert x.shape == (10000, 1, 32, 32) and np.array_equal(y, y28)
    assert np.array_equal(x[:, :, 2:30, 2:30], plain) and np.count_nonzero(x) == np.count_nonzero(plain)


# ---------------------------------------------------------------- synthetic IDX + errors
def test_synthetic_idx_roundtrip(tmp_path):
    images, labels = _write_idx(tmp_path / "mnist", "test", n=5)
    x, y = load_split("mnist", "test", data_dir=tmp_path)
    np.testing.assert_allclose(x[:, 0], images / np.float32(255), rtol=1e-6)
    np.testing.assert_array_equal(y, labels)


def test_missing_dir_and_file(tmp_path):
    with pytest.raises(DatasetError, match="data directory not found"):
        load_split("mnist", "train", data_dir=tmp_path / "nope")
    with pytest.raises(DatasetError, match=r"expected .*train-images-idx3-ubyte\.gz"):
        load_split("mnist", "train", data_dir=tmp_path)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"labels not found: expected .*train-labels-idx1-ubyte\.gz"):
        load_split("mnist", "train", data_dir=tmp_path)


def test_truncated_and_not_gzip(tmp_path):
    _write_idx(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        load_split("fashion-mnist", "train", data_dir=tmp_path)
    path.write_bytes(b"definitely not gzip data")
    with pytest.raises(DatasetError, match="corrupt or truncated gzip"):
        load_split("fashion-mnist", "train", data_dir=tmp_path)


def test_bad_magic(tmp_path):
    _write_idx(tmp_path, img_magic=1234)
    with pytest.raises(DatasetError, match=r"bad IDX magic number 1234 \(expected 2051\)"):
        load_split("mnist", "train", data_dir=tmp_path)


def test_header_payload_count_mismatch(tmp_path):
    images = np.zeros((4, 28, 28), np.uint8)
    header = struct.pack(">4I", 2051, 5, 28, 28)  # claims 5 images, has 4
    _write_gz(tmp_path / "train-images-idx3-ubyte.gz", header + images.tobytes())
    _write_gz(tmp_path / "train-labels-idx1-ubyte.gz", _idx_bytes(np.zeros(5, np.uint8), 2049))
    with pytest.raises(DatasetError, match=r"header declares 5 items .* payload has 3136 bytes"):
        load_split("mnist", "train", data_dir=tmp_path)
    _write_gz(tmp_path / "train-images-idx3-ubyte.gz", b"\x00\x00")
    with pytest.raises(DatasetError, match="too short for an IDX header"):
        load_split("mnist", "train", data_dir=tmp_path)


def test_images_labels_mismatch_and_wrong_size(tmp_path):
    _write_idx(tmp_path, n=3, n_labels=4)
    with pytest.raises(DatasetError, match="3 images but 4 labels"):
        load_split("mnist", "train", data_dir=tmp_path)
    _write_idx(tmp_path, n=3, size=20)
    with pytest.raises(DatasetError, match=r"images are \(20, 20\)"):
        load_split("mnist", "train", data_dir=tmp_path)


def test_cache_sees_rewritten_files(tmp_path):
    _write_idx(tmp_path, n=3)
    assert len(load_split("mnist", "train", data_dir=tmp_path)[1]) == 3
    _write_idx(tmp_path, n=6)
    assert len(load_split("mnist", "train", data_dir=tmp_path)[1]) == 6
    clear_cache()


# ---------------------------------------------------------------- CIFAR
@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_layout(tmp_path, protocol):
    folder = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        _dump(folder / f"data_batch_{i}", _cifar_batch(2, offset=10 * i), protocol)
    _dump(folder / "test_batch", _cifar_batch(3), protocol)
    x, y = load_split("cifar10", "train", data_dir=tmp_path)  # parent folder
    assert x.shape == (10, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, [(i % 2 + 10 * (i // 2 + 1)) % 10 for i in range(10)])
    # channel-first: plane 0 is red (per-image value), planes 1 and 2 are constant
    assert x[0, 0, 0, 0] == pytest.approx(20 / 255) and x[1, 0, 31, 31] == pytest.approx(21 / 255)
    assert np.all(x[:, 1] == np.float32(100) / 255) and np.all(x[:, 2] == np.float32(200) / 255)
    xt, yt = load_split("cifar10", "test", data_dir=folder)  # the batches folder itself
    assert xt.shape == (3, 3, 32, 32) and list(yt) == [0, 1, 2]


def test_cifar100_layout(tmp_path):
    folder = tmp_path / "cifar-100-python"
    _dump(folder / "train", _cifar_batch(4, b"fine_labels", 100, offset=97))
    _dump(folder / "test", {"data": _cifar_batch(2)[b"data"], "fine_labels": [99, 0]})  # str keys
    x, y = load_split("cifar100", "train", data_dir=tmp_path)
    assert x.shape == (4, 3, 32, 32) and list(y) == [97, 98, 99, 0]
    assert list(load_split("cifar100", "test", data_dir=folder)[1]) == [99, 0]


def test_cifar_errors(tmp_path):
    with pytest.raises(DatasetError, match=r"expected .*cifar-10-batches-py.*data_batch_1"):
        load_split("cifar10", "train", data_dir=tmp_path)
    folder = _write_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match=r"CIFAR batch not found: expected .*data_batch_3"):
        load_split("cifar10", "train", data_dir=tmp_path)
    _dump(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8)})
    with pytest.raises(DatasetError, match=r"test_batch: missing key\(s\) \['labels'\]"):
        load_split("cifar10", "test", data_dir=tmp_path)
    _dump(folder / "test_batch", {b"data": np.zeros((2, 1024), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DatasetError, match=r"shape \(N, 3072\), got \(2, 1024\)"):
        load_split("cifar10", "test", data_dir=tmp_path)
    _dump(folder / "test_batch", {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
    with pytest.raises(DatasetError, match="2 images but labels have shape"):
        load_split("cifar10", "test", data_dir=tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps(_cifar_batch(2))[:50])
    with pytest.raises(DatasetError, match="corrupt or unreadable pickle"):
        load_split("cifar10", "test", data_dir=tmp_path)


class _RunsCommand:
    """Unpickling this would run a shell command (classic pickle attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    folder = _write_cifar10(tmp_path)
    _dump(folder / "test_batch", {b"data": _RunsCommand(marker), b"labels": [0]})
    with pytest.raises(DatasetError, match=r"test_batch: pickle references forbidden global (posix|nt)\.system"):
        load_split("cifar10", "test", data_dir=tmp_path)
    assert not marker.exists()
    _dump(folder / "test_batch", {b"data": _RunsEval(), b"labels": [0]}, protocol=4)
    with pytest.raises(DatasetError, match=r"forbidden global builtins\.eval"):
        load_split("cifar10", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- batches
def test_batches_deterministic_and_complete():
    x, y = load_split("digits", "test")
    out = list(batches(x, y, 64, shuffle=True, seed=5))
    again = list(batches(x, y, 64, shuffle=True, seed=5))
    assert [len(b[1]) for b in out] == [64] * 5 + [40]
    assert out[0][0].dtype == torch.float32 and out[0][1].dtype == torch.int64
    assert out[0][0].shape == (64, 1, 8, 8)
    for (xa, ya), (xb, yb) in zip(out, again):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = next(iter(batches(x, y, 64, shuffle=True, seed=6)))[1]
    assert not torch.equal(out[0][1], other)
    assert sorted(torch.cat([b[1] for b in out]).tolist()) == sorted(y.tolist())
    plain = torch.cat([b[0] for b in batches(x, y, 100, shuffle=False, seed=0)])
    assert torch.equal(plain, torch.from_numpy(x))
    with pytest.raises(DatasetError, match="360 inputs but 10 labels"):
        next(batches(x, y[:10], 8))


def test_padded_sets_in_training_configs():
    """A padded name trains like its base set: the MLP's default sizes with an N*N input, the base's recipe."""
    from snncc.training.train import TrainConfig
    cfg = TrainConfig(method="bptt", model="mlp", dataset="mnist-32")
    assert cfg.layer_sizes() == [1024, 1024, 1024, 512, 256, 10]
    assert TrainConfig(method="bptt", model="mlp", dataset="mnist").layer_sizes() == [784, 1024, 1024, 512, 256, 10]
    assert cfg.defaults()["epochs"] == TrainConfig(method="bptt", model="mlp", dataset="mnist").defaults()["epochs"] == 5
