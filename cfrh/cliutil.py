"""What every command shares: one-line user errors with exit code 1, and the consoles."""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console
from rich.markup import escape

from cfrh.errors import CfrhError

console = Console(soft_wrap=True)  # results
err_console = Console(stderr=True, soft_wrap=True)  # progress, notes and errors

USER_ERROR_EXIT = 1  # Click keeps 2 for usage errors (an unknown option, a missing argument)


def user_errors(command):
    """Run ``command``; a ``CfrhError`` becomes its one line on stderr and exit code 1. Anything
    else is a bug and keeps its traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CfrhError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
            sys.stderr.flush()
            raise typer.Exit(USER_ERROR_EXIT) from None

    return wrapper
