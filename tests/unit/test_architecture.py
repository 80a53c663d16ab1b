"""The layout's rules, checked on the source (issue 11): adapters stay behind their interfaces,
backend names come from the registry, no module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

from orchestrator import backends

PACKAGE = Path(__file__).resolve().parents[2] / "orchestrator"
# Where backend names may be written out: the adapters and registry, and configuration.
NAMES_ALLOWED = ("backends/", "settings")


def _modules() -> list[tuple[str, ast.Module]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        out.append((rel, ast.parse(path.read_text(), filename=str(path))))
    return out


def _imports(tree: ast.Module) -> list[tuple[str, list[str]]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def test_nothing_outside_backends_imports_an_adapter_package() -> None:
    adapters = {f"orchestrator.backends.{name.replace('-', '_')}" for name in backends.NAMES}
    offenders = [
        f"{rel}: {module}"
        for rel, tree in _modules() if not rel.startswith("backends/")
        for module, names in _imports(tree)
        if any(module == a or module.startswith(a + ".") for a in adapters)
        or (module == "orchestrator.backends" and set(names) & {n.replace("-", "_") for n in backends.NAMES})
    ]
    assert offenders == []


def test_backends_import_nothing_from_the_job_engine_but_value_types() -> None:
    offenders = [
        f"{rel}: {module}"
        for rel, tree in _modules() if rel.startswith("backends/")
        for module, _ in _imports(tree)
        if module.startswith("orchestrator.jobs") and module != "orchestrator.jobs.states"
    ]
    assert offenders == []


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = [
        f"{rel}: from {module} import {name}"
        for rel, tree in _modules()
        for module, names in _imports(tree) if module.startswith("orchestrator")
        for name in names if name.startswith("_") and not name.startswith("__")
    ]
    assert offenders == []


def test_no_backend_name_literal_outside_the_registry_and_configuration() -> None:
    names = set(backends.NAMES)
    offenders = []
    for rel, tree in _modules():
        if rel.startswith(NAMES_ALLOWED):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert offenders == []


def test_every_exception_class_lives_in_errors() -> None:
    """Private sentinels (``_BodyTooLarge``: control flow inside one module, never raised to a
    caller) are the only exceptions outside the tree."""
    offenders = []
    for rel, tree in _modules():
        if rel == "errors.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_") and any(
                isinstance(b, ast.Name) and (b.id.endswith(("Error", "Exception")) or b.id in {
                    "Exception", "OrchestratorError"}) for b in node.bases):
                offenders.append(f"{rel}: {node.name}")
    assert offenders == []
