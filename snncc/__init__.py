"""snncc: train spiking networks, export them to a typed spike-graph IR, validate,
lower to Lava or a Numba event-driven simulator, and profile energy."""
import logging as _logging

# torch logs a warning about Triton on every CPU-only import; it is noise for users.
_logging.getLogger("torch._library.triton").setLevel(_logging.ERROR)
_logging.getLogger("torch.utils._sympy.interp").setLevel(_logging.ERROR)

__version__ = "0.1.0"


def export(module, example_input, timesteps=None, **kwargs):
    """Export a torch/spikingjelly spiking network to a SpikeGraph (see snncc.export.export)."""
    from snncc.export.trace import export as _export
    return _export(module, example_input, timesteps=timesteps, **kwargs)
