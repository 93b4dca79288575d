"""The house rules that keep the project in one piece: light imports, one version, the seams
between the stages (read from every module's imports), every config key declared, every
command documented (see docs/architecture.md)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cfrh", "cfrh_cache", "cfrh_train", "cfrh_search", "cfrh_cli", "cfrh_testing", "cfrh_api")
HEAVY_OPTIONAL = {"faiss", "optuna", "fastapi", "uvicorn", "pyarrow", "matplotlib", "torchvision", "timm",
                  "huggingface_hub", "open_clip", "webdataset"}  # imported where used, and nowhere else


def modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (entry-point shims aside)."""
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__" and package != "cfrh_cli":
                continue  # `python -m cfrh_cache` (torchrun's way in): a shim to cfrh_cli, imported by nothing
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, whether inside a function) of every import statement of a file."""
    tree, found = ast.parse(path.read_text()), []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.extend((f"{child.module}.{a.name}", in_function) for a in child.names)
            else:
                visit(child, inner)
    visit(tree, False)
    return found


def project_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports (``from a.b import c`` counts a.b.c where it is one)."""
    names = modules()
    graph = {}
    for name, path in names.items():
        targets = set()
        for imported, _ in imports(path):
            while imported and imported not in names:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


ALLOWED = {  # room → the rooms (or single modules) it may import
    "cfrh": {"cfrh"},
    "cfrh_cache": {"cfrh", "cfrh_cache"},
    "cfrh_train": {"cfrh", "cfrh_train", "cfrh_cache.store"},
    "cfrh_search": {"cfrh", "cfrh_search", "cfrh_cache.store", "cfrh_train.results", "cfrh_train.methods"},
    "cfrh_cli": set(PACKAGES) - {"cfrh_testing", "cfrh_api"},  # the tops: each uses the stages, none another top
    "cfrh_testing": set(PACKAGES) - {"cfrh_cli", "cfrh_api"},
    "cfrh_api": set(PACKAGES) - {"cfrh_cli", "cfrh_testing"},
}


def test_no_import_runs_back_up_the_house():
    wrong = []
    for name, targets in project_graph().items():
        room = name.split(".")[0]
        for target in targets:
            if not any(target == a or target.startswith(a + ".") for a in ALLOWED[room]):
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_no_import_circle():
    graph, state, circles = project_graph(), {}, []

    def walk(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(nxt_ := node, ())):
            if nxt.startswith(nxt_ + ".") or nxt_.startswith(nxt + "."):
                continue  # a package and its own modules (``__init__`` re-exports)
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert not circles, circles


def test_imports_sit_at_the_top_of_library_modules():
    """Inside a function only a heavy optional dependency (or torch where a light module asks for
    a device); the commands (cfrh_cli) import the libraries when a command runs."""
    hidden = []
    for name, path in modules().items():
        if name.startswith("cfrh_cli"):
            continue
        for imported, in_function in imports(path):
            top = imported.split(".")[0]
            if in_function and top not in HEAVY_OPTIONAL and not (name == "cfrh.devices" and top == "torch"):
                hidden.append(f"{name}: {imported}")
    assert not hidden, hidden


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in [*modules().values(), *(ROOT / "bench").glob("*.py")]
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_no_test_imports_another_test_module():
    names = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    wrong = [f"{p.name}: {m}" for p in (ROOT / "tests").glob("*.py") for m, _ in imports(p) if m.split(".")[0] in names]
    assert not wrong, wrong


def test_errors_and_light_commands_import_no_torch():
    code = ("import sys, cfrh.errors, cfrh_cli.cache, cfrh_cache.verify, cfrh_train.config, cfrh_train.methods; "
            "heavy = [m for m in ('torch', 'open_clip') if m in sys.modules]; print(heavy); sys.exit(bool(heavy))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_one_version_from_the_package_metadata():
    import cfrh
    import cfrh_cache
    out = CliRunner().invoke(__import__("cfrh_cli", fromlist=["app"]).app, ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"cfrh {cfrh.__version__}"
    assert cfrh_cache.__version__ == cfrh.__version__ != "0+unknown"


def test_every_config_key_is_declared_and_every_method_loads():
    from cfrh_train.config import defaults, keys
    from cfrh_train.methods import METHODS
    declared = keys()
    for method in METHODS:
        assert set(defaults(method)) <= set(declared)  # defaults() checks types and ranges too
    assert all(spec.get("help") for spec in declared.values())


@pytest.mark.parametrize("command", [[], ["cache"], ["cache", "features"], ["cache", "import"], ["train"], ["table"],
                                     ["tune"], ["search"], ["serve"], ["export"]])
def test_every_option_has_a_help_text(command):
    import typer

    from cfrh_cli import app
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


def test_every_test_the_docs_name_exists():
    import re
    readme = "\n".join(p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
    named = set()
    for cell in re.findall(r"`(test_\w+::test_\w+)`((?:, `::test_\w+`)*)", readme):
        module, first = cell[0].split("::")
        named.add((module, first))
        named.update((module, extra) for extra in re.findall(r"::(test_\w+)", cell[1]))
    assert len(named) > 30
    missing = [f"{m}::{t}" for m, t in sorted(named) if f"def {t}(" not in (ROOT / "tests" / f"{m}.py").read_text()]
    assert not missing, missing


def every_command():
    import typer

    from cfrh_cli import app
    stack, out = [typer.main.get_command(app)], []
    while stack:
        cmd = stack.pop()
        out.append(cmd)
        stack.extend(getattr(cmd, "commands", {}).values())
    return out


@pytest.mark.parametrize("option", ["device", "cache_dir", "runs_dir", "progress"])
def test_a_shared_option_has_one_default_and_one_help_text(option):
    found = [(c.name, p.default, p.help) for c in every_command() for p in c.params if p.name == option]
    assert len(found) >= 3 and len({(d, h) for _, d, h in found}) == 1, found
    if option == "device":
        assert found[0][1] == "auto" and all(w in found[0][2] for w in ("cpu", "cuda", "mps"))


@pytest.mark.parametrize("alias", ["cache_cli", "train_app", "table_app", "tune_app", "search_app"])
def test_every_alias_answers_version(alias):
    import cfrh
    import cfrh_cli
    out = CliRunner().invoke(getattr(cfrh_cli, alias), ["--version"])
    assert out.exit_code == 0 and out.output.strip() == f"cfrh {cfrh.__version__}", out.output


def test_the_entry_points_are_declared_in_one_module():
    import tomllib
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts and all(target.split(":")[0] == "cfrh_cli" for target in scripts.values()), scripts


def test_a_list_option_takes_repeats_and_words_alike():
    from cfrh_cli.options import words
    assert words(["16 32"], int) == words(["16", "32"], int) == words(["16,32"], int) == [16, 32]
    assert words([""]) == words([]) == []
