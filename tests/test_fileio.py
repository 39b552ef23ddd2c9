"""snncc.fileio: atomic writes that never replace what snncc did not write, and clean up after killed writes."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from graphs import mlp

from snncc import fileio
from snncc.fileio import MARKER, OutputError
from snncc.ir import serialize


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_file_kinds_are_recognised_by_content(tmp_path, rng):
    serialize.save(mlp(rng), tmp_path / "m.snn.onnx")
    fileio.write_json(tmp_path / "r.json", {"a": 1}, kind="json")
    assert json.loads((tmp_path / "r.json").read_text())["snncc"] == {"format": "snncc-output", "version": 1,
                                                                      "kind": "json"}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig = plt.figure()
    with fileio.atomic_path(tmp_path / "f.png") as tmp:
        fig.savefig(tmp, format="png")
    fig.savefig(tmp_path / "user.png", format="png")   # the same figure, not written through snncc
    plt.close(fig)
    import torch
    torch.save({"format": "snncc-checkpoint/1", "w": torch.zeros(2)}, tmp_path / "c.pt")
    torch.save({"format": "other/1"}, tmp_path / "other.pt")
    (tmp_path / "plain.json").write_text('{"a": 1}')
    assert fileio.is_snncc_output(tmp_path / "m.snn.onnx", "graph")
    assert fileio.is_snncc_output(tmp_path / "r.json", "json")
    assert fileio.is_snncc_output(tmp_path / "f.png", "png")
    assert fileio.is_snncc_output(tmp_path / "c.pt", "checkpoint")
    assert not fileio.is_snncc_output(tmp_path / "user.png", "png")
    assert not fileio.is_snncc_output(tmp_path / "other.pt", "checkpoint")
    assert not fileio.is_snncc_output(tmp_path / "plain.json", "json")
    assert not fileio.is_snncc_output(tmp_path / "r.json", "graph")
    assert not fileio.is_snncc_output(tmp_path / "m.snn.onnx", "json")
    # the stamped PNG is still a valid PNG matplotlib reads back
    img = plt.imread(tmp_path / "f.png")
    assert img.ndim == 3 and np.array_equal(img, plt.imread(tmp_path / "user.png"))


def test_a_foreign_file_is_refused_unless_forced(tmp_path, rng):
    target = tmp_path / "m.snn.onnx"
    target.write_text("my notes")
    with pytest.raises(OutputError, match=f"refusing to overwrite {target}: not a snncc graph file"):
        serialize.save(mlp(rng), target)
    assert target.read_text() == "my notes"
    serialize.save(mlp(rng), target, force=True)
    assert serialize.load(target).name == "mlp"
    serialize.save(mlp(rng), target)           # now it is snncc's own: replaced without --force
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.snn.onnx"]


def test_parent_file_and_directory_target_are_refused_even_with_force(tmp_path):
    (tmp_path / "f").write_text("x")
    for force in (False, True):
        with pytest.raises(OutputError, match=f"cannot write {tmp_path / 'f' / 'a.json'}: {tmp_path / 'f'} is not"):
            fileio.write_json(tmp_path / "f" / "a.json", {}, kind="json", force=force)
        with pytest.raises(OutputError, match="it is a directory"):
            fileio.write_json(tmp_path, {}, kind="json", force=force)
    assert (tmp_path / "f").read_text() == "x"


def test_errors_inside_the_block_name_the_users_path(tmp_path):
    with pytest.raises(OutputError) as info:
        with fileio.atomic_path(tmp_path / "out.bin") as tmp:
            open(tmp / "sub", "wb")   # NotADirectoryError on the temporary file
    assert str(tmp_path / "out.bin") in str(info.value) and ".tmp" not in str(info.value)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OutputError) as info:
        with fileio.atomic_dir(tmp_path / "art", kind="numba") as tmp:
            (tmp / "a").write_text("")
            open(tmp / "a" / "b", "wb")
    assert str(info.value) == f"cannot write {tmp_path / 'art' / 'a' / 'b'}: Not a directory"
    assert list(tmp_path.iterdir()) == []
    fig_path = tmp_path / "figure"          # a PNG without the suffix is stamped too
    with fileio.atomic_path(fig_path) as tmp:
        tmp.write_bytes(fileio.PNG_SIGNATURE + bytes(25) + b"rest")
    assert fileio.is_snncc_output(fig_path, "png")


def test_atomic_dir_replaces_its_own_kind_refuses_others_and_force_moves_aside(tmp_path):
    out = tmp_path / "art"
    with fileio.atomic_dir(out, kind="numba") as tmp:
        (tmp / "a.txt").write_text("1")
    assert json.loads((out / MARKER).read_text()) == {"format": "snncc-output", "version": 1, "kind": "numba"}
    with fileio.atomic_dir(out, kind="numba") as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "b.txt"]
    with pytest.raises(OutputError, match=f"refusing to write into {out}: .* not a snncc lava output"):
        with fileio.atomic_dir(out, kind="lava"):
            pass
    user = tmp_path / "photos"
    user.mkdir()
    (user / "cat.jpg").write_bytes(b"meow")
    with pytest.raises(OutputError, match=f"{user}"):
        with fileio.atomic_dir(user, kind="lava"):
            pass
    assert (user / "cat.jpg").read_bytes() == b"meow"
    with fileio.atomic_dir(user, kind="lava", force=True) as tmp:
        (tmp / "lava.json").write_text("{}")
    assert (tmp_path / "photos.orig-1" / "cat.jpg").read_bytes() == b"meow"   # moved aside, not deleted
    assert (user / "lava.json").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with fileio.atomic_dir(empty, kind="lava") as tmp:
        (tmp / "x").write_text("")
    assert (empty / "x").exists()


def test_failed_write_leaves_the_old_output(tmp_path):
    fileio.write_json(tmp_path / "r.json", {"v": 1}, kind="json")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(tmp_path / "r.json", kind="json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads((tmp_path / "r.json").read_text())["v"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_stale_temporaries_of_dead_writers_are_cleaned_on_the_next_write(tmp_path):
    dead = _dead_pid()
    stale = [tmp_path / f".r.json.{dead}.ab12cd_x.tmp", tmp_path / ".r.json.k3j4h5g6.tmp"]   # new and old names
    for p in stale:
        p.write_text("partial")
    (tmp_path / f".art.{dead}.zz9.tmp").mkdir()
    (tmp_path / f".art.{dead}.zz9.tmp" / "lava.json").write_text("{}")
    live = tmp_path / f".r.json.{os.getpid()}.inflight.tmp"     # a write in progress in this process
    live.write_text("writing")
    other = tmp_path / ".notes.tmp"                               # not ours
    other.write_text("user")
    fileio.write_json(tmp_path / "r.json", {}, kind="json")
    assert not any(p.exists() for p in stale) and live.exists() and other.exists()
    with fileio.atomic_dir(tmp_path / "art", kind="numba"):
        pass
    assert not (tmp_path / f".art.{dead}.zz9.tmp").exists()


def test_an_old_output_moved_aside_by_a_killed_write_is_restored(tmp_path):
    dead = _dead_pid()
    old = tmp_path / f".art.old.{dead}"
    old.mkdir()
    (old / MARKER).write_text(json.dumps({"format": "snncc-output", "version": 1, "kind": "numba"}))
    (old / "graph.snn.onnx").write_text("g")
    fileio.clean_stale(tmp_path / "art")
    assert (tmp_path / "art" / "graph.snn.onnx").read_text() == "g" and not old.exists()


def test_output_dir_claims_marks_and_removes_what_it_created_on_failure(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ValueError):
        with fileio.output_dir(run, "run"):
            raise ValueError("bad config")
    assert not run.exists()
    with fileio.output_dir(run, "run"):
        (run / "model.pt").write_text("m")
    with fileio.output_dir(run, "run"):      # its own folder: reused
        pass
    with pytest.raises(OutputError, match="not a snncc demo output"):
        fileio.prepare_dir(run, "demo")
    user = tmp_path / "user"
    user.mkdir()
    (user / "thesis.tex").write_text("t")
    with pytest.raises(OutputError, match=f"{user}"):
        fileio.prepare_dir(user, "run")
    fileio.prepare_dir(user, "run", force=True)    # forced: written into, nothing deleted, not claimed
    assert (user / "thesis.tex").read_text() == "t" and not (user / MARKER).exists()
    (tmp_path / "file").write_text("f")
    with pytest.raises(OutputError, match=f"refusing to replace {tmp_path / 'file'}: it is a file"):
        fileio.prepare_dir(tmp_path / "file", "run")


def test_folders_written_before_markers_are_recognised_by_their_snncc_files(tmp_path, rng):
    import torch
    art = tmp_path / "art"                      # a numba artifact of an earlier snncc: replaced
    art.mkdir()
    serialize.save(mlp(rng), art / "graph.snn.onnx")
    (art / "target.json").write_text("{}")
    (art / "summary.txt").write_text("s")
    with fileio.atomic_dir(art, kind="numba") as tmp:
        (tmp / "target.json").write_text('{"new": 1}')
    assert json.loads((art / "target.json").read_text()) == {"new": 1}
    assert not list(tmp_path.glob("art.orig-*"))
    mixed = tmp_path / "mixed"                  # the same plus a user's file: not an artifact, refused
    mixed.mkdir()
    serialize.save(mlp(rng), mixed / "graph.snn.onnx")
    (mixed / "target.json").write_text("{}")
    (mixed / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=f"{mixed}"):
        with fileio.atomic_dir(mixed, kind="numba"):
            pass
    run = tmp_path / "run"                      # a training run of an earlier snncc: reused
    run.mkdir()
    torch.save({"format": "snncc-checkpoint/1"}, run / "model.pt")
    fileio.prepare_dir(run, "run")
    with pytest.raises(OutputError):
        fileio.prepare_dir(run, "demo")
