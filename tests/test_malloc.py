import subprocess
import sys


def test_allocator_tuning_applied_and_can_be_disabled():
    code = "import ase_mlff._malloc as m, ase_mlff; print(m._applied)"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    off = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"ASE_MLFF_MALLOC_TUNING": "0", "PATH": ""},
    )
    assert on.stdout.strip() == ("True" if sys.platform.startswith("linux") else "False")
    assert off.stdout.strip() == "False"
