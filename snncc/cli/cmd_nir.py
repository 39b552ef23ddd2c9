"""NIR commands: `snncc import FILE.nir` and the NIR output of `snncc export --format nir`."""
from __future__ import annotations

import os

import click

from snncc.cli.common import FORCE_OPTION


@click.command("import")
@click.argument("nir_file", type=click.Path())
@click.option("-o", "--output", type=click.Path(), required=True, help="spike graph file (.snn.onnx)")
@click.option("--dt", type=float, default=None,
              help="simulation step in seconds (NIR files do not store it; snnTorch's exporter assumes 1e-4, "
                   "Norse 1e-3) [default: the file's metadata 'dt', else required]")
@click.option("--encoding", type=click.Choice(["direct", "spike"]), default=None,
              help="direct: the analog sample is presented at every step; spike: the input is a spike train "
                   "[default: the file's metadata 'input_encoding' (snncc writes it), else direct]")
@FORCE_OPTION
def import_cmd(nir_file, output, dt, encoding, force):
    """Import a NIR graph (snnTorch, Norse, Sinabs, Rockpool, ...) as a spike graph, exactly or refused by node."""
    from snncc import fileio
    from snncc.ir.serialize import save
    from snncc.nir import from_nir
    fileio.check_output(output, "graph", force)
    graph = from_nir(nir_file, dt=dt, encoding=encoding,
                     name=os.path.basename(nir_file).split(".")[0] or "nir")
    save(graph, output, force=force)
    click.echo(f"imported {len(graph)} nodes ({len(graph.populations())} populations, "
               f"dt={graph.metadata['nir.dt']:g} s) -> {output}")


def export_nir(source, output, dt, graph=None, force=False):
    """`snncc export SOURCE --format nir`: SOURCE is a spike graph (.snn.onnx) or an already rebuilt graph."""
    from snncc.nir import write_nir
    if graph is None:
        from snncc.cli.common import load_graph
        graph = load_graph(source)
    write_nir(graph, output, dt=1e-4 if dt is None else dt, force=force)
    click.echo(f"exported {len(graph)} nodes ({len(graph.populations())} populations) as NIR -> {output}")


COMMANDS = (import_cmd,)
