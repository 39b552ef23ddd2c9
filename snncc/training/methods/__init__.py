"""Training methods: one module per method family, each a loss strategy (:class:`base.TrainingMethod`)
for the architectures that support it, listed in the module's ``REGISTER``.

``bsd`` (local losses of paired Type 1 / Type 2 paths), ``bptt`` (surrogate-gradient BPTT end to end),
``ann`` (backprop on the ReLU twin), ``kd`` (the KD divergence, eq. 9), ``mskd`` (eq. 11: direct, kd,
mskd, mskd-norecon on ResNets). Every module of this package is imported here, so a new method is one
new module; :mod:`snncc.training.registry` builds the (method, model) table from ``MODULES``.
"""
from __future__ import annotations

import importlib
import pkgutil

MODULES = [importlib.import_module(f"{__name__}.{info.name}") for info in sorted(pkgutil.iter_modules(__path__))
           if info.name != "base"]
