"""The pipeline has one direction: a module imports only from its own stage and earlier ones."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAGES = ["common", "data_gen", "tokenizer_ext", "recipes", "inference", "eval"]  # bench and tests: anything


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every import in a file, function-level imports included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def violations(repo: Path) -> list[str]:
    found = []
    for rank, stage in enumerate(STAGES):
        for path in sorted((repo / stage).rglob("*.py")):
            later = sorted(imported_packages(path) & set(STAGES[rank + 1:]))
            found += [f"{path.relative_to(repo)} imports {name}" for name in later]
    return found


def test_no_module_imports_a_later_stage():
    assert violations(REPO) == []


def test_the_check_sees_a_backward_import(tmp_path):
    for stage in STAGES:
        (tmp_path / stage).mkdir()
    (tmp_path / "data_gen" / "bad.py").write_text("def f():\n    from inference.recommend import Recommender\n")
    (tmp_path / "eval" / "fine.py").write_text("import data_gen.catalog\nfrom common import config\n")
    assert violations(tmp_path) == ["data_gen/bad.py imports inference"]


@pytest.mark.parametrize("folder", ["bench"])
def test_no_script_edits_sys_path(folder):
    edits = [p.name for p in (REPO / folder).rglob("*.py") if "sys.path" in p.read_text(encoding="utf-8")]
    assert edits == []
