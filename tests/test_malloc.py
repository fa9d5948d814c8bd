import subprocess
import sys


def _applied(code, env=None):
    out = subprocess.run(
        [sys.executable, "-c", code + "; import ase_mlff._malloc as m; print(m._applied)"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return out.stdout.strip().splitlines()[-1]


def test_allocator_tuning_is_opt_in_and_can_be_disabled():
    linux = "True" if sys.platform.startswith("linux") else "False"
    # importing the library (any layer) leaves the process's allocator alone
    assert _applied("import ase_mlff, ase_mlff.md, ase_mlff.training") == "False"
    # the entry points opt in: the recipes, or a user's explicit call
    assert _applied("import ase_mlff.recipes") == linux
    assert _applied("import ase_mlff; ase_mlff.keep_freed_memory()") == linux
    off = {"ASE_MLFF_MALLOC_TUNING": "0", "PATH": ""}
    assert _applied("import ase_mlff.recipes", env=off) == "False"
