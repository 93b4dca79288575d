"""The ``cfrh`` command and its ``cfrh-*`` aliases, declared here and nowhere else: the one
module above every package (stage 1 ``cfrh_cache``, stage 2 ``cfrh_train``, using the codes
``cfrh_search``), so that no package imports a command.

    cfrh cache features synth --root data/synth     (= cfrh-cache features …)
    cfrh train --dataset synth --bits 32            (= cfrh-train …)
    cfrh table --datasets synth                     (= cfrh-table …)
    cfrh tune --method cfrh --trials 30             (= cfrh-tune …)
    cfrh search runs/synth/cfrh/32bit/seed0 --text "red circle"   (= cfrh-search …)
    cfrh serve runs/synth/cfrh/32bit/seed0          (a local search page; = cfrh-search RUN --serve)
    cfrh export runs/synth/cfrh/32bit/seed0         (write a run's search index again)
"""

from __future__ import annotations

import typer

from cfrh_cli.cache import app as cache_app
from cfrh_cli.options import Version
from cfrh_cli.search import export_command, search_command, serve_command
from cfrh_cli.train import table_command, train_command, tune_command

HELP = "Unsupervised cross-modal hashing: cache features once, train, compare, search."
app = typer.Typer(no_args_is_help=True, help=HELP)


@app.callback()
def main(version: Version = False) -> None:
    """Unsupervised cross-modal hashing: cache features once, train, compare, search."""


app.add_typer(cache_app, name="cache")
for name, command in (("train", train_command), ("table", table_command), ("tune", tune_command),
                      ("search", search_command), ("serve", serve_command), ("export", export_command)):
    app.command(name)(command)


def alias(command) -> typer.Typer:
    """A stand-alone ``cfrh-<stage>`` command: the documented aliases (each answers ``--version``)."""
    one = typer.Typer(add_completion=True)
    one.command()(command)
    return one


cache_cli = cache_app
train_app, table_app, tune_app, search_app = (alias(c) for c in (train_command, table_command, tune_command,
                                                                 search_command))
