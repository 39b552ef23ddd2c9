"""NIR (Neuromorphic Intermediate Representation) import and export.

:func:`from_nir` builds snncc's spike graph from a NIR graph or ``.nir`` file, exactly or
refusing by node; :func:`to_nir` / :func:`write_nir` write a spike graph as NIR. See docs/nir.md.
The ``nir`` package is imported only when these functions run.
"""
from snncc.nir.exporter import NIRExportError, to_nir, write_nir
from snncc.nir.importer import NIRImportError, from_nir

__all__ = ["from_nir", "to_nir", "write_nir", "NIRImportError", "NIRExportError"]
