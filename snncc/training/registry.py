"""The (method, model) table: which training method trains which architecture family.

Built from the ``REGISTER`` lists of :mod:`snncc.training.methods`' modules. The trainers and the CLI
ask it (:func:`lookup`) instead of matching method names: a pair that is not in the table is refused
with one line listing the supported pairs (:class:`UnsupportedPair`, a ConfigError: exit 2 in the CLI).
"""
from __future__ import annotations

from snncc.training import methods
from snncc.training.config import ConfigError
from snncc.training.methods.base import Method, ModelKind, TrainingMethod, Variant

__all__ = ["Method", "ModelKind", "TABLE", "TrainingMethod", "UnsupportedPair", "Variant", "lookup", "method_names",
           "register", "supported"]

TABLE: dict = {}  # (method name, model kind) -> TrainingMethod


class UnsupportedPair(ConfigError):
    """A method that does not train the given model kind."""


def register(method: TrainingMethod, *models) -> TrainingMethod:
    """Add ``method`` for each model kind in ``models``; a pair already taken by another method is refused."""
    for model in models:
        key = (str(method.name), str(ModelKind(model)))  # plain strings: enum hashes differ from str's
        if TABLE.get(key, method) is not method:
            raise ValueError(f"method {method.name!r} is already registered for model {model!r}")
        TABLE[key] = method
    return method


def supported() -> dict:
    """{method name: [model kinds it trains]}, in registration order."""
    out: dict = {}
    for (name, kind) in TABLE:
        out.setdefault(name, []).append(kind)
    return out


def method_names(*models) -> list:
    """Method names that train any of ``models`` (all methods when none is given), in registration order."""
    return [name for name, kinds in supported().items() if not models or set(kinds) & {str(m) for m in models}]


def lookup(method, model) -> TrainingMethod:
    """The method registered for (``method``, model kind ``model``), else UnsupportedPair listing the pairs."""
    found = TABLE.get((str(method), str(model)))
    if found is None:
        pairs = "; ".join(f"{name} on {', '.join(kinds)}" for name, kinds in supported().items())
        known = str(method) in supported()
        raise UnsupportedPair(f"unknown method {str(method)!r}{f' for model {str(model)!r}' if known else ''} "
                              f"(supported: {pairs})")
    return found


for _module in methods.MODULES:
    for _method, _models in getattr(_module, "REGISTER", ()):  # kd.py: a loss the others use
        register(_method, *_models)
