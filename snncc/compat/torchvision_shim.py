"""The one torchvision name spikingjelly's model zoo imports, for an environment without torchvision.

``spikingjelly.activation_based.model.{spiking_resnet, sew_resnet, spiking_vgg}`` import
``load_state_dict_from_url`` at module level (from ``torchvision.models.utils``, else from
``torchvision._internally_replaced_utils``), only to fetch ImageNet weights when ``pretrained=True``.
torchvision's function is torch's own ``torch.hub.load_state_dict_from_url``. The registry's
torchvision wheels are CUDA builds whose C++ operators do not register against the CPU torch
2.13.0 (``import torchvision`` fails), so snncc does not depend on torchvision (docs/install.md).

:func:`install` adds an import hook that, *only while no real torchvision can be found*, answers
``torchvision`` with an empty package and ``torchvision._internally_replaced_utils`` with that one
name. Every other ``torchvision.*`` import still fails as if torchvision were absent, and the shim has
no distribution metadata, so libraries probing for torchvision by version (transformers) still see
none. ``make setup`` installs the hook for the whole environment with a ``.pth`` file
(:func:`write_pth`); ``snncc.export`` installs it too.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import sysconfig
from pathlib import Path

PACKAGE = "torchvision"
PROVIDED = {f"{PACKAGE}._internally_replaced_utils": ("load_state_dict_from_url",)}
PTH_NAME = "snncc_torchvision_shim.pth"
PTH_LINE = "import snncc.compat.torchvision_shim as _s; _s.install()\n"


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__snncc_shim__ = True
        if module.__name__ == PACKAGE:
            module.__doc__ = "snncc's stand-in for torchvision (see snncc.compat.torchvision_shim)"
            return
        import torch.hub

        for name in PROVIDED[module.__name__]:
            setattr(module, name, getattr(torch.hub, name))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname == PACKAGE:  # asked last (appended): every real finder has found no torchvision
            return importlib.machinery.ModuleSpec(fullname, _Loader(), is_package=True)
        if fullname in PROVIDED and getattr(sys.modules.get(PACKAGE), "__snncc_shim__", False):
            return importlib.machinery.ModuleSpec(fullname, _Loader())
        return None


def install() -> None:
    """Add the hook once (appended: every real finder is asked first)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())


def write_pth(site_packages: str | None = None) -> Path:
    """Write the ``.pth`` line that installs the hook at interpreter start-up; returns its path."""
    path = Path(site_packages or sysconfig.get_paths()["purelib"]) / PTH_NAME
    path.write_text(PTH_LINE)
    return path
