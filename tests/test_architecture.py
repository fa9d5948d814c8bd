"""The layers contract (setup.cfg, [importlinter]): layers import only downward. Checked on
the package as it is, and shown to fail on a copy with one planted upward import."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = [
    sys.executable,
    "-c",
    "import sys; from importlinter.cli import lint_imports_command as lint; sys.exit(lint())",
]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        LINT,
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(cwd), "PATH": ""},
    )


def test_layers_import_only_downward():
    pytest.importorskip("importlinter")
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 kept, 0 broken" in res.stdout


@pytest.mark.parametrize(
    "module,planted",
    [
        ("ase_mlff/data/splits.py", "from ase_mlff.models import prediction"),  # data -> models
        ("ase_mlff/md/detectors.py", "from ase_mlff.metrics import rdf"),  # md -> metrics
        ("ase_mlff/training/trainer.py", "import ase_mlff.agents.labelling"),  # training -> agents
    ],
)
def test_the_contract_breaks_on_a_planted_upward_import(tmp_path, module, planted):
    pytest.importorskip("importlinter")
    shutil.copytree(
        ROOT / "ase_mlff",
        tmp_path / "ase_mlff",
        ignore=shutil.ignore_patterns("__pycache__", "shipped"),
    )
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{planted}  # planted\n")
    res = _lint(tmp_path)
    assert res.returncode != 0
    assert "0 kept, 1 broken" in res.stdout
    assert module.replace("/", ".").removesuffix(".py") in res.stdout
