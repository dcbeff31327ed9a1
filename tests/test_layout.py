"""The import layout: each module of the core imports only those below it, so each file is what its
name says; the laboratory under experiments/ imports the core, and the core never imports it."""

import ast

import pytest

from conftest import REPO

COMMAND_LINES = {"train", "evaluate", "bench"}
MAY_IMPORT = {  # module at the top: the project modules it may import
    "data": set(),
    "rift": {"data"},
    "synonyms": {"data"},
    "attacks": {"data", "synonyms"},
    "attacking": {"data", "rift", "attacks"},  # the searches run against a model, many examples at once
    "adversaries": {"data", "rift", "attacks", "attacking"},  # PGD and ASCC: rift's x_adv, and attacks of their own
    "similarity": {"data", "rift", "attacks", "attacking"},  # the meaning check the searches apply
    "checkpoints": {"data", "rift"},
    "eval_folder": {"data", "attacking", "checkpoints"},  # an evaluate.py results folder: nothing lost or mixed; joined
    "cli": {"data"},
    "processes": {"data", "rift", "checkpoints"},  # a training run's processes: DDP, the stop all agree on
    "costs": {"data", "rift", "adversaries"},  # what a training step costs, and the tiny models smoke runs time
    **{name: {"data", "rift", "synonyms", "attacks", "attacking", "adversaries", "cli"} for name in COMMAND_LINES},
}
MAY_IMPORT["train"] |= {"checkpoints", "processes"}
MAY_IMPORT["evaluate"] |= {"checkpoints", "eval_folder", "similarity"}  # one writer per results folder; the meaning check
MAY_IMPORT["bench"] |= {"costs"}
LABORATORY = {path.stem for path in (REPO / "experiments").glob("*.py")}


def project_imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & (set(MAY_IMPORT) | LABORATORY)


def top_level_functions(name: str) -> set[str]:
    return {node.name for node in ast.parse((REPO / f"{name}.py").read_text()).body if isinstance(node, ast.FunctionDef)}


def test_every_module_has_its_place_in_the_layout():
    """A module missing here would escape every check of this file, and its imports with it: the top
    holds the core, bench.py and costs.py; everything else is the laboratory's."""
    assert {path.stem for path in REPO.glob("*.py")} == set(MAY_IMPORT)
    assert not (REPO / "experiments" / "__init__.py").exists()  # scripts, not a package
    assert not LABORATORY & set(MAY_IMPORT)  # one module per name on sys.path


@pytest.mark.parametrize("name", MAY_IMPORT)
def test_each_module_imports_only_the_modules_below_it(name):
    assert project_imports(REPO / f"{name}.py") <= MAY_IMPORT[name]


@pytest.mark.parametrize("name", sorted(LABORATORY))
def test_the_laboratory_imports_the_core_and_itself(name):
    assert project_imports(REPO / "experiments" / f"{name}.py") <= set(MAY_IMPORT) | LABORATORY


def test_only_the_command_lines_import_cli():
    assert {name for name in MAY_IMPORT if "cli" in project_imports(REPO / f"{name}.py")} <= COMMAND_LINES


def test_the_command_lines_toolkit_lives_in_cli_not_in_data():
    toolkit = {"run_command", "at_least", "fraction", "add_data_flags", "pick_device", "environment", "newest_run",
               "format_table", "pyplot"}
    assert toolkit <= top_level_functions("cli")
    assert not toolkit & top_level_functions("data")


def test_readme_layout_names_every_module():
    """README's layout table is how a reader finds a file: a module missing from it is hidden."""
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    assert "`experiments/`" in layout
    assert {name for name in set(MAY_IMPORT) | LABORATORY if f"`{name}.py`" not in layout} == set()
