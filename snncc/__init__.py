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


def from_nir(graph_or_path, dt=None, encoding=None, **kwargs):
    """A SpikeGraph from a NIR graph or .nir file, exactly or refused by node (see snncc.nir.from_nir, docs/nir.md)."""
    from snncc.nir import from_nir as _from_nir
    return _from_nir(graph_or_path, dt=dt, encoding=encoding, **kwargs)


def to_nir(graph, dt=1e-4):
    """A nir.NIRGraph equal to the SpikeGraph with step dt seconds (see snncc.nir.to_nir; write_nir writes a file)."""
    from snncc.nir import to_nir as _to_nir
    return _to_nir(graph, dt=dt)
