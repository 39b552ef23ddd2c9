"""The `snncc` command line: train -> export -> validate -> compile / run / energy -> bench.

Every command turns known failures (bad files, bad names, bad shapes) into one
line on stderr and a non-zero exit; outputs are written atomically.
Exit codes: 0 ok, 1 validation found a hybrid graph, 2 bad input, 3 internal error.
Commands live in cmd_*.py by stage; each module lists its top-level commands in COMMANDS.
"""
from __future__ import annotations

import click

from snncc.cli import cmd_analysis, cmd_bench, cmd_deploy, cmd_nir, cmd_train
from snncc.cli.common import Group


@click.group(cls=Group)
@click.version_option(package_name="snncc")
def main():
    """snncc: spiking neural network compiler and simulator."""


for _module in (cmd_train, cmd_nir, cmd_deploy, cmd_analysis, cmd_bench):
    for _command in _module.COMMANDS:
        main.add_command(_command)
