"""Imports go one way (DESIGN.md): schedules -> diffusion -> losses/likelihood/samplers ->
train -> cli. Maths modules import no nn.Module and no I/O; networks import no diffusion maths."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "ddpmkit"

# the layer of each top-level module or subpackage; a module may import only from layers <= its own
LAYER = {
    "errors": 0, "io": 0, "progress": 0, "threads": 0, "schedules": 1, "nets": 1, "data": 1,
    "diffusion": 2,
    "denoiser": 3, "losses": 3, "equivalence": 3, "likelihood": 4, "samplers": 4,
    "metrics": 4, "calibrate": 5, "figures": 5, "generate": 5, "train": 6, "report": 7,
    "evaluate": 7, "interop": 7, "demo": 8,
    "distributed": 6, "cli": 9, "__main__": 10, "__init__": 10,
}
PURE_MATHS = {"schedules", "diffusion", "losses", "likelihood", "equivalence"}
MATHS = {"schedules", "diffusion", "denoiser", "losses", "likelihood", "samplers", "equivalence"}


def _top(module_path: Path) -> str:
    rel = module_path.relative_to(PKG)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path, text: str | None = None):
    """(module, names) for every import in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text() if text is None else text)
    pkg_parts = path.relative_to(PKG).parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = list(pkg_parts[: len(pkg_parts) - (node.level - 1)])
                mod = (node.module or "").split(".") if node.module else []
                parts = base + mod
                if parts:
                    yield "ddpmkit." + ".".join(parts), [a.name for a in node.names]
                else:
                    for a in node.names:
                        yield "ddpmkit." + a.name, []
            elif node.module:
                yield node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_every_module_has_a_known_layer():
    unknown = {_top(p) for p in PKG.rglob("*.py")} - set(LAYER)
    assert not unknown, f"add these to LAYER in tests/test_layering.py: {sorted(unknown)}"


def test_imports_go_one_way():
    bad = []
    for path in PKG.rglob("*.py"):
        me = _top(path)
        for mod, _ in _imports(path):
            if not mod.startswith("ddpmkit."):
                continue
            other = mod.split(".")[1]
            if other.startswith("__"):  # the package's own __init__ (e.g. __version__)
                continue
            if other != me and LAYER.get(other, 99) > LAYER[me]:
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert not bad, bad


def test_maths_imports_no_io_and_networks_no_maths():
    bad = []
    for path in PKG.rglob("*.py"):
        me = _top(path)
        for mod, names in _imports(path):
            if me in PURE_MATHS and (mod in ("torch.nn", "ddpmkit.io", "ddpmkit.figures")
                                     or (mod == "torch" and "nn" in names)
                                     or mod.split(".")[0] in ("os", "pathlib", "json",
                                                              "safetensors", "PIL")):
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
            if me == "nets" and mod.startswith("ddpmkit.") and mod.split(".")[1] in MATHS:
                bad.append(f"{path.relative_to(PKG)} imports {mod}")
    assert not bad, bad


def test_the_layering_check_catches_a_violation():
    """The resolver sees a lower layer importing the CLI (so the test above can fail)."""
    path = PKG / "schedules.py"
    mods = [m for m, _ in _imports(path, "from .cli import main\nfrom . import diffusion\n")]
    assert mods == ["ddpmkit.cli", "ddpmkit.diffusion"]
    assert LAYER["cli"] > LAYER["schedules"] and LAYER["diffusion"] > LAYER["schedules"]
