"""The map of the house holds: each app and room imports only what lies below it (README, "Architecture").

Read from the source (every import, those inside functions too; not those under TYPE_CHECKING), as
../shared/tools/importcycles.py does, so a new import against the direction fails here before it is a circle.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# importer prefix -> prefixes it must never import. Lowest first: backoffice's audit and alerts, chain, the
# console, owner actions, disputes (which asks owner actions for an owner resolution), backups beside them, and
# monitoring (health, metrics, checks, the dashboard) above all of them. The site wiring (backoffice.urls,
# admin_site, celery) mounts the rooms and is not a layer.
FORBIDDEN = {
    "backoffice.audit": ("chain", "disputes", "ops"),
    "backoffice.alerts": ("chain", "disputes", "ops"),
    "chain": ("disputes", "ops"),
    "ops.console": ("ops.actions", "ops.backups", "ops.monitoring", "disputes"),
    "ops.actions": ("ops.backups", "ops.monitoring", "disputes"),
    "disputes": ("ops.console", "ops.backups", "ops.monitoring"),
    "ops.backups": ("ops.actions", "ops.console", "ops.monitoring", "disputes", "chain"),
    "ops.models": ("ops.actions", "ops.backups", "ops.console", "ops.monitoring", "disputes"),
}


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found, todo = set(), [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if (isinstance(child, ast.If)
                    and getattr(child.test, "id", getattr(child.test, "attr", "")) == "TYPE_CHECKING"):
                todo.extend(child.orelse)
                continue
            todo.append(child)
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return found


def _modules():
    for app in ("backoffice", "chain", "disputes", "ops"):
        for path in (ROOT / app).rglob("*.py"):
            rel = path.relative_to(ROOT)
            if "migrations" in rel.parts:
                continue
            yield ".".join(rel.with_suffix("").parts).removesuffix(".__init__"), path


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _violations(module: str, path: Path) -> list[str]:
    wrong = []
    for importer, banned in FORBIDDEN.items():
        if _under(module, importer):
            wrong += [f"{module} imports {target} (a {importer} module may not import {', '.join(banned)})"
                      for target in sorted(_imports(path, module)) if any(_under(target, b) for b in banned)]
    return wrong


def test_layers_every_import_goes_downwards():
    wrong = [line for module, path in _modules() for line in _violations(module, path)]
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_layers_an_upward_import_inside_a_function_is_named(tmp_path):
    """The check can fail: a room importing one above it, even inside a function, is named; a type-only
    import is not (it never runs)."""
    path = tmp_path / "fake.py"
    path.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ops.backups import services\n"
                    "def f():\n    from ..monitoring import health\n")
    assert _violations("ops.actions.fake", path) == [
        "ops.actions.fake imports ops.monitoring (a ops.actions module may not import ops.backups, ops.monitoring, "
        "disputes)",
        "ops.actions.fake imports ops.monitoring.health (a ops.actions module may not import ops.backups, "
        "ops.monitoring, disputes)"]
