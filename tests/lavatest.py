"""Shared by the Lava test modules: the Lava backends, or a module-level skip when Lava is unusable."""
import pytest


def require_lava():
    """-> (the Lava backend package, its fixed-point API); skips the calling test module if lava-nc cannot be imported."""
    lb = pytest.importorskip("snncc.backends.lava")
    lf = pytest.importorskip("snncc.backends.lava.fixed_point")
    try:
        from snncc.compat.lava import import_lava
        import_lava()
    except Exception as e:  # pragma: no cover
        pytest.skip(f"lava unavailable: {e}", allow_module_level=True)
    return lb, lf
