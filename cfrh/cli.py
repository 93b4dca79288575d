"""``cfrh``: the one command, with the stages as subcommands.

    cfrh cache features synth --root data/synth     (= cfrh-cache features …)
    cfrh train --dataset synth --bits 32            (= cfrh-train …)
    cfrh table --datasets synth                     (= cfrh-table …)
    cfrh search runs/synth/cfrh/32bit/seed0 --text "red circle"   (= cfrh-search …)
    cfrh serve runs/synth/cfrh/32bit/seed0          (a local search page; = cfrh-search RUN --serve)
"""

from __future__ import annotations

from typing import Annotated

import typer

from cfrh import __version__
from cfrh_cache.cli import app as cache_app
from cfrh_train.cli import search_command, serve_command, table_command, train_command, tune_command

app = typer.Typer(no_args_is_help=True, help="Unsupervised cross-modal hashing: cache features once, train, compare, search.")


def _version(value: bool) -> None:
    if value:
        print(f"cfrh {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="print the version and exit")] = False) -> None:
    """Unsupervised cross-modal hashing: cache features once, train, compare, search."""


app.add_typer(cache_app, name="cache")
app.command("train")(train_command)
app.command("table")(table_command)
app.command("search")(search_command)
app.command("serve")(serve_command)
app.command("tune")(tune_command)


def alias(command):
    """A stand-alone ``cfrh-<stage>`` command with ``--version`` too (the documented aliases)."""
    single = typer.Typer(add_completion=True)
    single.command()(command)
    return single


train_app, table_app, search_app = alias(train_command), alias(table_command), alias(search_command)
tune_app = alias(tune_command)
