"""Every option the commands share, said once: its type, its choices (built from the registries),
its default and its help text. A command declares ``device: Device = DEVICE``, not its own.

List-valued options (``--bits``, ``--seeds``, ``--datasets``, ``--methods``, ``--encoders``) take
words: repeated (``--bits 16 --bits 32``) or in one argument, separated by spaces or commas
(``--bits "16 32"``), and ``words`` reads both. Options of ``key=value`` pairs (``--set``,
``--index-param``) are repeated, one pair each, since a value may hold spaces or commas.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cfrh import __version__
from cfrh.devices import check_device_name
from cfrh.errors import ConfigError
from cfrh_cache.readers import READERS
from cfrh_cache.readers.shards import ON_ERROR
from cfrh_cache.splits import PROTOCOLS
from cfrh_search.ann import KINDS
from cfrh_train.config import defaults
from cfrh_train.methods import METHODS, register


def choices(name: str, values) -> type[Enum]:
    """A Typer choice type from a registry's names (the registry stays the one list)."""
    return Enum(name, {v: v for v in values}, type=str)


Dataset = choices("Dataset", READERS)
Protocol = choices("Protocol", PROTOCOLS)
IndexKind = choices("IndexKind", KINDS)
Modality = choices("Modality", ("image", "text"))
TextKind = choices("TextKind", ("bow", "dense"))
OnError = choices("OnError", ON_ERROR)


def _print_version(value: bool) -> None:
    if value:
        print(f"cfrh {__version__}")
        raise typer.Exit()


Version = Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                       help="print the version and exit")]


def _device(value: str) -> str:
    try:
        return check_device_name(value)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"--device {value!r}: ")) from None


def _method(value: str | None) -> str | None:
    try:
        if value is None:
            return None
        name = register(value)
        defaults(name)  # its keys declared and its defaults checked now, before any work
        return name
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


METHOD_HELP = (f"the hashing method: {', '.join(METHODS)}, an installed one (entry point group cfrh.methods), "
               "or your own as FILE.py:Class")
Method = Annotated[str, typer.Option(callback=_method, help=METHOD_HELP)]
MaybeMethod = Annotated[str | None, typer.Option(callback=_method, help=f"{METHOD_HELP} (default: the config's)")]
DEVICE = "auto"
Device = Annotated[str, typer.Option(callback=_device, help="where to compute: auto (a GPU where torch sees one, "
                                                               "else the CPU), cpu, cuda, cuda:N or mps")]
CacheDir = Annotated[Path, typer.Option(help="the cache root: CACHE_DIR/<dataset> holds a dataset's cache")]
CACHE_DIR = Path("cache")
RunsDir = Annotated[Path, typer.Option(help="where run folders go (and tables, studies, ablations beside them)")]
RUNS_DIR = Path("runs")
CachedDataset = Annotated[str | None, typer.Option("--dataset", help="a cached dataset under --cache-dir (default: "
                                                                    "the only one there)")]
Progress = Annotated[bool, typer.Option(help="show progress bars (on stderr; results go to stdout)")]
BITS_HELP = "code length K"
Bits = Annotated[int, typer.Option(min=1, max=1023, help=BITS_HELP)]
MaybeBits = Annotated[int | None, typer.Option(min=1, max=1023, help=f"{BITS_HELP} (default: the config's)")]
SearchIndex = Annotated[IndexKind, typer.Option(help="the search index: exact, or faiss's ivf, hnsw or mih (approximate; "
                                               "pip install 'cfrh[ann]')")]
INDEX = IndexKind.exact
IndexParams = Annotated[list[str], typer.Option(help="with --index: a parameter, e.g. nprobe=32, ef_search=128, "
                                                     "nflip=2 (repeat it)")]
Shards = Annotated[int, typer.Option(min=1, help="split the index in N shards, searched and merged")]


def seed_option(what: str, optional: bool = False):
    """``--seed``: a non-negative integer; ``what`` says which draw it seeds in this command
    (``optional``: None leaves it to the config)."""
    if optional:
        return Annotated[int | None, typer.Option(min=0, help=f"seed of {what} (default: the config's)")]
    return Annotated[int, typer.Option(min=0, help=f"seed of {what}")]


def words_option(help: str):
    """A list-valued option (see the module doc): repeated, or words in one argument."""
    return Annotated[list[str], typer.Option(help=f"{help} (words: repeat the option, or separate by spaces "
                                                  "or commas)")]


def words(values: list[str] | str, kind=str, option: str = "") -> list:
    """The words of a list-valued option, as ``kind`` (``--bits "16 32"`` or ``--bits 16 --bits 32``)."""
    text = " ".join([values] if isinstance(values, str) else values)
    try:
        return [kind(w) for w in text.replace(",", " ").split()]
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected {kind.__name__} values separated by spaces") from None
