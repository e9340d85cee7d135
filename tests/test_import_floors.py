"""The package's floors: every import inside tiny_decoder points down (or stays inside its own package), so a
reader following a function's arguments never climbs back up. Read from the source (every `import`, also
inside functions), not from what happens to be imported at run time."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "tiny_decoder"

# Lowest first. model/ ships inside every saved folder and imports nothing of ours; io/ and engine are services
# with no knowledge of training (cli.py: argument files, one-line errors; aot_step.py: what the engine compiles
# ahead of time, handed its step); commands.py and demo.py are the top.
FLOORS = {
    "model": 0,
    "io": 1,
    "aot_step": 1,
    "engine": 2,
    "data": 2,
    "evaluation": 3,
    "training": 4,
    "export": 5,
    "pruning": 5,
    "experiments": 6,
    "cli": 1,
    "commands": 7,
    "demo": 7,
}


def unit(module: str) -> str:
    """'tiny_decoder.training.objectives.sft' -> 'training'; the package's own __init__ -> ''."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports() -> set[tuple[str, str]]:
    """(importing module, imported module) for every import of tiny_decoder inside tiny_decoder."""
    edges = set()
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        me = ".".join(parts if parts[-1] != "__init__" else parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    known = (PACKAGE.parent / (full.replace(".", "/") + ".py")).exists()
                    edges.add((me, full if known or (PACKAGE.parent / full.replace(".", "/")).is_dir() else target))
            elif isinstance(node, ast.Import):
                edges.update((me, alias.name) for alias in node.names)
    return {(a, b) for a, b in edges if b.split(".")[0] == "tiny_decoder"}


def test_every_import_points_down_the_floors():
    edges = imports()
    assert len(edges) > 50  # the reader found the package's imports
    units = {unit(a) for a, _ in edges} | {unit(b) for _, b in edges}
    assert units - {""} <= set(FLOORS), f"give these a floor: {sorted(units - {''} - set(FLOORS))}"
    upward = sorted(
        f"{a} -> {b}" for a, b in edges if unit(b) and unit(a) != unit(b) and FLOORS.get(unit(a), 99) <= FLOORS[unit(b)]
    )
    assert not upward, "imports that climb (or cross a floor):\n" + "\n".join(upward)
    # The root package only registers the model with the Auto classes; nothing inside imports it.
    assert not [a for a, b in edges if b == "tiny_decoder" and a != "tiny_decoder"]


def test_the_model_files_import_nothing_but_each_other():
    """They ship as remote code inside every saved folder: an import of the rest of the package would fail there."""
    outside = sorted(f"{a} -> {b}" for a, b in imports() if unit(a) == "model" and unit(b) != "model")
    assert not outside, outside


def test_package_inits_only_re_export():
    for init in PACKAGE.rglob("__init__.py"):
        defined = [n.name for n in ast.parse(init.read_text()).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        if init.parent != PACKAGE:  # the root registers the Auto classes
            assert not defined, f"{init.relative_to(PACKAGE.parent)} defines {defined}: give them a module of their own"
