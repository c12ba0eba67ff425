"""No module imports from a layer above its own (issue 14, items 2 and 6).

Every module under src/imagenet_prep is parsed (not imported) and each of its
imports of imagenet_prep, at module level or inside a function, is checked against
the layers below, lowest first.  A module may import its own layer and any layer
below it, except where a rule below says otherwise.

    0  imagenet_prep (the package: its version), errors, layout
    1  formats, sources, runtime       (may import each other, nothing above)
    2  folders, shards, download, replica   (shards and folders never import each other)
    3  check, report                   (readers: layers 0 and 1 and each other only)
    4  prepare, stages
    5  cli, __main__
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "imagenet_prep"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

LAYERS: dict[str, int] = {
    "": 0, "errors": 0, "layout": 0,
    "formats": 1, "sources": 1, "runtime": 1,
    "folders": 2, "shards": 2, "download": 2, "replica": 2,
    "check": 3, "report": 3,
    "prepare": 4, "stages": 4,
    "cli": 5, "__main__": 5,
}

# Pairs (importer, imported) that their layers would allow but that are kept apart:
# shards and folders are independent writers, and check and report are readers that
# take names from layout and bytes from formats/sources, never from a writer.
APART = {("shards", "folders"), ("folders", "shards")} | {
    (reader, writer) for reader in ("check", "report")
    for writer in ("folders", "shards", "download", "replica")}

# Known violations that another change is removing; each must still be present (so the
# entry is deleted once it is fixed), and nothing else may be added here without an issue.
KNOWN: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _top(module: str) -> str:
    """The layer key of a module inside the package: `shards.tfrecord` -> `shards`."""
    return module.split(".", 1)[0]


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name (inside the package, without `imagenet_prep.`) a from-import names."""
    if node.level:
        base = module.split(".") if module else []
        if not is_package:
            base = base[:-1]
        base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
        return ".".join(base + ([node.module] if node.module else []))
    assert node.module is not None
    return node.module.removeprefix(PACKAGE).lstrip(".")


def _imports(path: Path, module: str) -> list[tuple[str, int]]:
    """(imported module inside the package, line) for every import in one file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.removeprefix(PACKAGE).lstrip("."), node.lineno) for a in node.names
                    if a.name == PACKAGE or a.name.startswith(PACKAGE + ".")]
        elif isinstance(node, ast.ImportFrom):
            if not node.level and not (node.module == PACKAGE
                                       or (node.module or "").startswith(PACKAGE + ".")):
                continue
            target = _resolve(module, path.name == "__init__.py", node)
            if target == "":  # `from imagenet_prep import x`: x may be a submodule
                out += [(a.name if a.name in LAYERS else "", node.lineno) for a in node.names]
            else:
                out.append((target, node.lineno))
    return out


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _edges() -> list[tuple[str, str, str]]:
    """(importer, imported, where) over the whole package."""
    edges = []
    for path in _modules():
        module = _module_name(path)
        for target, line in _imports(path, module):
            edges.append((module, target, f"{path.relative_to(SRC.parent)}:{line}"))
    return edges


def _violation(module: str, target: str) -> str | None:
    src, dst = _top(module), _top(target)
    if src == dst:
        return None
    if src not in LAYERS or dst not in LAYERS:
        return f"{src or dst!r} has no layer: add it to LAYERS in tests/test_layering.py"
    if LAYERS[dst] > LAYERS[src]:
        return f"layer {LAYERS[src]} ({src}) imports layer {LAYERS[dst]} ({dst})"
    if (src, dst) in APART:
        return f"{src} and {dst} are kept apart"
    return None


def test_every_module_parses_and_has_a_layer():
    modules = [_module_name(p) for p in _modules()]
    assert len(modules) > 40
    assert {_top(m) for m in modules} <= set(LAYERS)


def test_no_module_imports_a_layer_above_it():
    found = {}
    for module, target, where in _edges():
        if (why := _violation(module, target)) is not None and (module, target) not in KNOWN:
            found[where] = f"{module} imports {target}: {why}"
    assert not found, "\n".join(f"{w}: {m}" for w, m in sorted(found.items()))


@pytest.mark.parametrize("pair", sorted(KNOWN))
def test_known_exceptions_are_still_needed(pair):
    """Each allowed exception is still a violation in the code: drop it once it is fixed."""
    module, target = pair
    assert _violation(module, target) is not None
    assert any((m, t) == pair for m, t, _ in _edges()), (
        f"{module} no longer imports {target}: delete it from KNOWN in tests/test_layering.py")


def test_check_and_report_import_no_writer():
    """The readers (check, report) take names from layout and bytes from formats/sources."""
    allowed = {"", "errors", "layout", "formats", "sources", "runtime", "check", "report"}
    found = [f"{where}: {module} imports {target}" for module, target, where in _edges()
             if _top(module) in ("check", "report") and _top(target) not in allowed]
    assert not found, "\n".join(found)


def test_the_rules_catch_a_violation(tmp_path):
    """Function-level, relative and plain imports are all seen, so a new violation fails."""
    src = tmp_path / "x.py"
    src.write_text("import os\nfrom . import tfrecord\n"
                   "def f():\n    from imagenet_prep.shards import wds\n"
                   "from ..folders import flatten\nimport imagenet_prep.cli.main\n"
                   "from imagenet_prep import __version__, prepare\n")
    targets = sorted(t for t, _ in _imports(src, "check.x"))
    assert targets == ["", "check", "cli.main", "folders", "prepare", "shards"]
    assert [t for t in targets if _violation("check.x", t)] == [
        "cli.main", "folders", "prepare", "shards"]
    assert _violation("shards.wds", "folders.bbox_csv") and _violation("folders.x", "shards.y")
    assert _violation("formats.tfrecord", "sources.tarindex") is None
    assert _violation("sources.archives", "runtime.pool") is None
    assert _violation("newpkg.x", "layout") is not None
