"""Layers point down: every import edge inside ``trainguard`` is checked against the layers.

- base: ``trainguard`` itself, ``errors``, ``envvars``, ``logs``, ``resources``,
  ``metrics_http``, ``sd_notify`` and the wire contract ``trainguard.schemas``; imports nothing of
  trainguard above it;
- middle: ``trainguard.agents`` (node side) and ``trainguard.pipeline`` (stream side);
  each imports the base and itself, never the other, never the top;
- top: the CLI, local services, demo, eval, Grafana and reports.

Imports inside functions count too: a lazy import is still an edge.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trainguard"
BASE = {"trainguard", "trainguard.errors", "trainguard.envvars", "trainguard.logs",
        "trainguard.resources", "trainguard.metrics_http", "trainguard.sd_notify"}
OLD_TOP_LEVEL = {"agents", "pipeline", "schemas"}


def _layer(module: str) -> str:
    if module in BASE or module.startswith("trainguard.schemas"):
        return "base"
    for middle in ("trainguard.agents", "trainguard.pipeline"):
        if module == middle or module.startswith(middle + "."):
            return middle
    return "top"


def _module_name(path: Path) -> str:
    parts = ["trainguard", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(dotted: str) -> bool:
    parts = dotted.split(".")
    if parts[0] != "trainguard":
        return False
    path = PACKAGE.joinpath(*parts[1:])
    return path.is_dir() or path.with_suffix(".py").is_file()


def _imports(path: Path, module: str) -> list[str]:
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            # `from trainguard import envvars` imports the submodule trainguard.envvars
            found += [f"{name}.{a.name}" if _is_module(f"{name}.{a.name}") else name
                      for a in node.names]
    return found


def _edges() -> list[tuple[str, str]]:
    edges = []
    # rglob does not enter the symlinked folders, so walk them explicitly.
    roots = [PACKAGE, *(PACKAGE / d for d in ("agents", "pipeline", "schemas"))]
    paths = {p for root in roots for p in root.rglob("*.py")}
    assert len(paths) > 100, "the walk must see the whole package"
    for path in sorted(paths):
        module = _module_name(path)
        edges += [(module, target) for target in _imports(path, module)]
    return edges


def _allowed(source: str, target: str) -> bool:
    src, dst = _layer(source), _layer(target)
    if src == "base":
        return dst == "base"
    if src.startswith("trainguard."):  # a middle package
        return dst in ("base", src)
    return True


def test_no_module_imports_a_layer_above_it_or_a_sibling_middle_package():
    upward = [f"{s} -> {t}" for s, t in _edges()
              if t.split(".")[0] == "trainguard" and not _allowed(s, t)]
    assert upward == []


def test_nothing_imports_the_old_top_level_package_names():
    old = [f"{s} -> {t}" for s, t in _edges() if t.split(".")[0] in OLD_TOP_LEVEL]
    assert old == []


def test_the_layer_rules_catch_an_upward_edge():
    assert not _allowed("trainguard.pipeline.worker", "trainguard.cli._common")
    assert not _allowed("trainguard.agents.daemon", "trainguard.pipeline.store")
    assert not _allowed("trainguard.schemas.records", "trainguard.agents.reporter")
    assert _allowed("trainguard.cli.worker", "trainguard.pipeline.worker")
