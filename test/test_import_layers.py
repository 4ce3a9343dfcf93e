"""Imports point downward: the layer contract in .importlinter (import-linter) holds, and it
names every top-level module of the package, so a new one cannot sit outside the picture."""
import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = REPO / ".importlinter"


def _layer_modules() -> set:
    cfg = configparser.ConfigParser()
    cfg.read(CONTRACTS)
    layers = cfg["importlinter:contract:layers"]["layers"]
    return {name.strip().strip("()") for name in re.split(r"[|:\n]", layers) if name.strip()}


def test_every_top_level_module_has_a_layer():
    top = {f"facebot.{p.stem if p.is_file() else p.name}" for p in (REPO / "facebot").iterdir()
           if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    assert top - _layer_modules() == set(), "give these modules a layer in .importlinter"


def test_import_contracts_are_kept():
    """Runs lint-imports on this checkout (not on an installed facebot); a broken contract fails
    with import-linter's report: which module imports which, at which line."""
    lint = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([*lint, "--no-cache", "--no-logo", str(CONTRACTS)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    report = res.stdout + res.stderr
    assert res.returncode == 0, report[report.find("Broken contracts"):] if "Broken contracts" in report else report
    assert re.search(r"Contracts: \d+ kept, 0 broken", report), report
