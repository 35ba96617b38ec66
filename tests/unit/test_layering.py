"""The project's folders stay layered: each imports only the folders below it (docs/design.md, "Layering").

Every module's imports are read with ``ast`` (module level, in functions, under ``TYPE_CHECKING``
alike) and the first part of each imported name is held to :data:`MAY_IMPORT`. A folder with
Python files and no rule fails too, so a new folder gets its place in the picture.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.settings import PROJECT_ROOT

PRODUCT = ("schemas", "udfs", "clickhouse", "infra", "jobs")
#: Folder -> the other project folders it may import. Product folders never import bench or tests.
MAY_IMPORT: dict[str, frozenset[str]] = {
    "schemas": frozenset(),
    "udfs": frozenset({"schemas"}),
    "clickhouse": frozenset({"schemas", "udfs"}),
    "infra": frozenset({"schemas", "udfs"}),
    "jobs": frozenset({"schemas", "udfs", "clickhouse", "infra"}),
    "bench": frozenset({*PRODUCT}),
    "tests": frozenset({*PRODUCT, "bench"}),
}
#: Folders that hold no project modules.
NOT_MODULES = frozenset({"docs", "config"})
#: Within ``jobs``: part (a package or a module) -> the other parts it may import. What runs inside
#: Flink (``flink``) needs only the configuration; the services around it (loader, replay, demo,
#: dashboard) never reach into one another's modules except where listed; only ``cli`` takes all.
JOBS_MAY_IMPORT: dict[str, frozenset[str]] = {
    "config": frozenset(),
    "flink": frozenset({"config"}),
    "topics": frozenset({"config", "flink"}),
    "produce": frozenset({"config", "topics"}),
    "loader": frozenset({"config", "produce", "topics"}),
    "cluster": frozenset({"config", "flink", "topics"}),
    "replay": frozenset({"config", "loader"}),
    "demo": frozenset({"config", "demo_money"}),
    "demo_money": frozenset({"config"}),
    "runs": frozenset({"config", "flink", "loader", "topics"}),
    "dashboard": frozenset({"config"}),
    "ingest": frozenset({"config", "produce"}),
    "alerts": frozenset({"config", "topics"}),
    "cli": frozenset({"*"}),
}


def imported_names(source: str, filename: str = "<source>") -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every absolute import in ``source``, wherever it stands."""
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def violations(folder: str, source: str, filename: str = "<source>") -> list[str]:
    """The imports of a module of ``folder`` that reach a project folder it may not import."""
    allowed = MAY_IMPORT[folder] | {folder}
    return [
        f"{filename}:{line}: {folder} imports {name}"
        for line, name in imported_names(source, filename)
        if (top := name.split(".")[0]) in MAY_IMPORT and top not in allowed
    ]


def jobs_violations(part: str, source: str, filename: str = "<source>") -> list[str]:
    """The imports of a module of ``jobs/<part>`` that reach a part of ``jobs`` it may not import."""
    allowed = JOBS_MAY_IMPORT[part] | {part}
    found = []
    for line, name in imported_names(source, filename):
        pieces = name.split(".")
        if pieces[0] == "jobs" and len(pieces) > 1 and "*" not in allowed and pieces[1] not in allowed:
            found.append(f"{filename}:{line}: jobs.{part} imports {name}")
    return found


def jobs_part(relative: Path) -> str | None:
    """``flink`` for jobs/flink/sql.py, ``replay`` for jobs/replay.py, None for jobs/__init__.py."""
    if len(relative.parts) < 2 or relative.parts[0] != "jobs" or (relative.name == "__init__.py" and len(relative.parts) == 2):
        return None
    return relative.parts[1].removesuffix(".py")


def project_modules() -> list[Path]:
    return sorted(
        path
        for path in PROJECT_ROOT.rglob("*.py")
        if not any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(PROJECT_ROOT).parts)
    )


def test_every_folder_with_modules_has_a_rule() -> None:
    folders = {path.relative_to(PROJECT_ROOT).parts[0] for path in project_modules()}
    assert folders - NOT_MODULES - set(MAY_IMPORT) == set(), "give the new folder its place in MAY_IMPORT and docs/design.md"
    assert set(PRODUCT) <= folders


def test_no_module_imports_across_the_layering() -> None:
    found = []
    for path in project_modules():
        relative = path.relative_to(PROJECT_ROOT)
        found += violations(relative.parts[0], path.read_text(encoding="utf-8"), str(relative))
    assert found == []


def test_every_part_of_jobs_has_a_rule() -> None:
    parts = {part for path in project_modules() if (part := jobs_part(path.relative_to(PROJECT_ROOT)))}
    assert parts - set(JOBS_MAY_IMPORT) == set(), "give the new part of jobs its place in JOBS_MAY_IMPORT and docs/design.md"


def test_the_flink_jobs_and_the_services_keep_apart() -> None:
    found = []
    for path in project_modules():
        relative = path.relative_to(PROJECT_ROOT)
        if (part := jobs_part(relative)) is not None:
            found += jobs_violations(part, path.read_text(encoding="utf-8"), str(relative))
    assert found == []


def test_the_jobs_rule_sees_a_service_reaching_into_another() -> None:
    source = "from jobs.config import Config\nfrom jobs.loader.loader import Loader\nimport jobs.dashboard.app\n"
    assert jobs_violations("flink", source) == [
        "<source>:2: jobs.flink imports jobs.loader.loader",
        "<source>:3: jobs.flink imports jobs.dashboard.app",
    ]
    assert jobs_violations("cli", source) == []
    assert jobs_part(Path("jobs/flink/sql.py")) == "flink" and jobs_part(Path("jobs/replay.py")) == "replay"


@pytest.mark.parametrize(
    ("folder", "source", "bad"),
    [
        ("clickhouse", "def f():\n    from jobs.config import Config\n", ["<source>:2: clickhouse imports jobs.config"]),
        (
            "udfs",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import clickhouse.client\n",
            ["<source>:3: udfs imports clickhouse.client"],
        ),
        (
            "jobs",
            "import tests.jvm\nfrom bench import pipeline\n",
            ["<source>:1: jobs imports tests.jvm", "<source>:2: jobs imports bench"],
        ),
        ("schemas", "import udfs\n", ["<source>:1: schemas imports udfs"]),
        (
            "bench",
            "from jobs.config import Config\nfrom tests.support import lines\n",
            ["<source>:2: bench imports tests.support"],
        ),
        ("infra", "import json\nfrom . import settings\nfrom schemas.validate import SCHEMA_DIR\n", []),
    ],
)
def test_the_rule_sees_imports_wherever_they_stand(folder: str, source: str, bad: list[str]) -> None:
    assert violations(folder, source) == bad


#: A product module longer than this says at its top why it is one module.
LONG_MODULE_LINES = 400


def test_a_long_module_says_why_it_is_one() -> None:
    unexplained = []
    for path in project_modules():
        relative = path.relative_to(PROJECT_ROOT)
        if relative.parts[0] not in PRODUCT:
            continue
        source = path.read_text(encoding="utf-8")
        if source.count("\n") > LONG_MODULE_LINES and "Why one module:" not in (ast.get_docstring(ast.parse(source)) or ""):
            unexplained.append(str(relative))
    assert unexplained == [], "split them, or say at the top why each is one module ('Why one module: …')"
