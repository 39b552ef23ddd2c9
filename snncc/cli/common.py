"""What every `snncc` command shares: the error policy, graph/dataset loading, output helpers, options."""
from __future__ import annotations

import json
import os
import sys

import click

from snncc import fileio
from snncc.ir.schema import MAX_TIMESTEPS

EXIT_HYBRID, EXIT_USAGE, EXIT_INTERNAL = 1, 2, 3


def user_errors() -> tuple:
    """Exception types that mean 'the user gave us something wrong' (imported lazily)."""
    from snncc.data.datasets import DatasetError
    from snncc.export import ExportError
    from snncc.ir.serialize import SerializeError
    from snncc.ir.types import GraphError
    from snncc.runtime import InputError
    from snncc.training.train import CheckpointError, ConfigError, TrainingDiverged
    from snncc.backends.base import LoweringError
    from snncc.analysis.bsd_plots import PlotError
    from snncc.data.sequences import SequenceError
    from snncc.fileio import OutputError
    from snncc.models.resnet import ModelError
    from snncc.training.mskd import MSKDError
    from snncc.energy.base import EnergyModelError
    errors = [EnergyModelError, LoweringError, ModelError, PlotError, SequenceError, MSKDError, DatasetError, ExportError, SerializeError, GraphError, InputError, CheckpointError,
              ConfigError, TrainingDiverged, OutputError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
              FileExistsError, PermissionError]
    try:
        from snncc.compat.lava import LavaUnavailable
        errors.append(LavaUnavailable)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError as e:  # bad option values etc.: one line too, exit 2
            if os.environ.get("SNNCC_DEBUG"):
                raise
            where = e.ctx.command_path if e.ctx is not None else ctx.command_path
            click.echo(f"error: {where}: {_one_line(e)}", err=True)
            ctx.exit(EXIT_USAGE)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:  # output piped into `head` etc.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(130)
        except Exception as e:  # noqa: BLE001 -- the CLI must never show a traceback
            if os.environ.get("SNNCC_DEBUG"):
                raise
            if isinstance(e, user_errors()):
                click.echo(f"error: {_one_line(e)}", err=True)
                ctx.exit(EXIT_USAGE)
            click.echo(f"error: internal error ({type(e).__name__}: {_one_line(e)}); "
                       f"set SNNCC_DEBUG=1 for a traceback", err=True)
            ctx.exit(EXIT_INTERNAL)


def _one_line(e: Exception) -> str:
    text = e.format_message() if isinstance(e, click.exceptions.ClickException) else str(e)
    text = text.strip() or type(e).__name__
    if isinstance(e, OSError) and e.filename:
        text = f"{e.strerror}: {e.filename}"
    return text.splitlines()[0]


# -- helpers ------------------------------------------------------------------
def load_graph(path):
    """A spike-graph file, or a directory written by `snncc compile` (its graph.snn.onnx, after
    the artifact's target file is validated: a folder without one is refused)."""
    from snncc.ir.serialize import load
    if os.path.isdir(path):
        from snncc.artifact import read_artifact
        return read_artifact(path).graph
    return load(path)


def dataset_for(graph, dataset):
    name = dataset or graph.metadata.get("dataset")
    if not name:
        raise click.UsageError("the graph records no dataset: pass --dataset")
    return name


def load_test_split(name, data_dir, limit, seed=0):
    from snncc.data.datasets import load_split
    return load_split(name, "test", data_dir=data_dir, limit=limit, seed=seed)


def emit_result(res: dict, as_json: bool) -> None:
    """A benchmark's result: JSON, or one aligned `key: value` line per entry."""
    if as_json:
        emit_json(res)
        return
    for k, v in res.items():
        click.echo(f"{k:>28}: {v}")


def emit_json(obj, path=None, force=False):
    """JSON on stdout, or into file ``path`` (stamped as snncc's, refused over a foreign file unless ``force``)."""
    if path and path != "-":
        fileio.write_json(path, obj, kind="json", force=force)
    else:
        click.echo(json.dumps(obj, indent=2))


FORCE_OPTION = click.option("--force", is_flag=True,
                      help="replace an existing output that snncc did not write (a foreign folder is moved aside "
                           "to NAME.orig-N, never deleted)")
DATASET_OPTION = click.option("--dataset", "dataset", default=None, help="digits, mnist, fashion-mnist, cifar10, cifar100, or mnist-N / fashion-mnist-N (zero-padded to N x N, e.g. fashion-mnist-32)")
DATA_DIR_OPTION = click.option("--data-dir", type=click.Path(), default=None, help="folder with the dataset's files")
LIMIT_OPTION = click.option("--limit", type=click.IntRange(min=1), default=None, help="evaluate on N test samples")
TIMESTEPS_OPTION = click.option("--timesteps", type=click.IntRange(1, MAX_TIMESTEPS), default=None,
                          help=f"override T (1..{MAX_TIMESTEPS})")
