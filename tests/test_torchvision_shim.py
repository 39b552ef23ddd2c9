"""snncc's torchvision stand-in for spikingjelly's model zoo: the zoo imports in the project's environment, the
one name is torch's own, every other torchvision import still fails, and a real torchvision is never shadowed."""
import os
import subprocess
import sys
import textwrap

from snncc.compat import torchvision_shim


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


def test_zoo_imports_in_the_project_environment():
    """`make setup` wrote the .pth: a plain interpreter imports the zoo with no snncc import first."""
    r = run_python("""
        from spikingjelly.activation_based.model import sew_resnet, spiking_resnet, spiking_vgg
        import torch.hub, torchvision
        assert spiking_resnet.load_state_dict_from_url is torch.hub.load_state_dict_from_url
        assert torchvision.__snncc_shim__
        try:
            import torchvision.datasets
        except ImportError as e:
            print("refused:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "refused: No module named 'torchvision.datasets'" in r.stdout


def test_a_real_torchvision_is_never_shadowed(tmp_path):
    real = tmp_path / "torchvision"
    real.mkdir()
    (real / "__init__.py").write_text("REAL = True\n")
    r = run_python("""
        import snncc.compat.torchvision_shim as s
        s.install()
        import torchvision
        print(getattr(torchvision, "REAL", False), hasattr(torchvision, "__snncc_shim__"))
    """, PYTHONPATH=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "False"]


def test_pth_line_installs_the_hook(tmp_path):
    path = torchvision_shim.write_pth(str(tmp_path))
    assert path.name == torchvision_shim.PTH_NAME and path.read_text() == torchvision_shim.PTH_LINE
    r = run_python(f"""
        import site, sys
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "_Finder"]
        site.addsitedir({str(tmp_path)!r})
        from torchvision._internally_replaced_utils import load_state_dict_from_url
        import torch.hub
        assert load_state_dict_from_url is torch.hub.load_state_dict_from_url
    """)
    assert r.returncode == 0, r.stderr
