"""The house rules that keep the project in one piece: light imports, one version, the seams
between the stages, every config key declared, every command documented."""

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]


def test_errors_and_light_commands_import_no_torch():
    code = ("import sys, cfrh.errors, cfrh_cache.cli, cfrh_cache.verify, cfrh_train.config, cfrh_train.methods; "
            "heavy = [m for m in ('torch', 'open_clip') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_stage2_imports_nothing_of_stage1_but_the_store():
    lines = [line for p in (ROOT / "cfrh_train").rglob("*.py") for line in p.read_text().splitlines()
             if "cfrh_cache" in line and ("import" in line)]
    assert lines and all("cfrh_cache.store import" in line for line in lines), lines


def test_one_version_from_the_package_metadata():
    import cfrh
    import cfrh_cache
    out = CliRunner().invoke(__import__("cfrh.cli", fromlist=["app"]).app, ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"cfrh {cfrh.__version__}"
    assert cfrh_cache.__version__ == cfrh.__version__ != "0+unknown"


def test_every_config_key_is_declared_and_every_method_loads():
    from cfrh_train.config import defaults, keys
    from cfrh_train.methods import METHODS
    declared = keys()
    for method in METHODS:
        assert set(defaults(method)) <= set(declared)  # defaults() checks types and ranges too
    assert all(spec.get("help") for spec in declared.values())


@pytest.mark.parametrize("command", [[], ["cache"], ["cache", "features"], ["train"], ["table"], ["search"]])
def test_every_option_has_a_help_text(command):
    import typer

    from cfrh.cli import app
    group = typer.main.get_command(app)
    cmd = group
    for name in command:
        cmd = cmd.commands[name]
    params = [p for p in cmd.params if p.param_type_name == "option" and not getattr(p, "hidden", False)]
    missing = [p.name for p in params if not p.help and p.name not in ("help", "install_completion", "show_completion")]
    assert params and not missing, (command, missing)
    assert "``" not in (cmd.help or "")  # user text, not a module docstring


def test_every_method_follows_the_interface():
    from cfrh_train.config import defaults
    from cfrh_train.methods import METHODS, build
    from cfrh_train.methods.base import Method
    small = {"img_hidden": [8], "txt_hidden": [8], "hidden": 8, "bits": 8, "gat_hidden": 8, "head_width": 8,
             "fusion_ff": 8, "fusion_heads": 2}
    for name in METHODS:
        config = {**defaults(name), **{k: v for k, v in small.items() if k in defaults(name)}}
        kind = "dense" if name == "ucmfh" else "bow"  # UCMFH takes CLIP text embeddings only
        method = build(name, config, 16, 12, kind)
        assert isinstance(method, Method)
        again = build(name, config, 16, 12, kind)
        again.load_index_state(method.index_state())  # the index round-trips through query_modules alone
        assert not any(k.split(".")[0] in ("decoder", "memory", "image_to_text", "text_to_image") or "nbr_" in k
                       for k in method.index_state())


def test_every_test_the_readme_names_exists():
    import re
    readme = (ROOT / "README.md").read_text()
    named = set()
    for cell in re.findall(r"`(test_\w+::test_\w+)`((?:, `::test_\w+`)*)", readme):
        module, first = cell[0].split("::")
        named.add((module, first))
        named.update((module, extra) for extra in re.findall(r"::(test_\w+)", cell[1]))
    assert len(named) > 30
    missing = [f"{m}::{t}" for m, t in sorted(named) if f"def {t}(" not in (ROOT / "tests" / f"{m}.py").read_text()]
    assert not missing, missing
