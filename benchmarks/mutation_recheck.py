"""Re-check the mutants mutmut reports as surviving, one by one, outside mutmut.

mutmut 2 counts a mutant as killed only when the test command exits with 1. A mutant that
breaks the import of the module (a syntax error, a name used before it exists) makes
pytest stop at collection with exit code 2, which mutmut records as *survived*. This
script takes every survivor of a finished ``benchmarks/mutation.sh`` run, applies its diff
(``mutmut show``) to a fresh copy of the repository as it is now, runs the module's tests
there and counts any non-zero exit as killed. What still passes is a confirmed survivor.

    python benchmarks/mutation_recheck.py runs/mutation/<run>/work/<module dir> \\
        "python -m pytest -x -q -p no:cacheprovider tests/test_x.py"

Prints the counts (mutmut's and the confirmed ones) as one JSON line and writes the
confirmed survivors' diffs to ``<work dir>/confirmed_survivors.diff``. ``UNTESTED=1`` also
tests the mutants mutmut never reached (a run that stopped early), so that every mutant
of the module counts.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _mutmut(work: Path, *args: str) -> str:
    exe = Path(sys.executable).with_name("mutmut")
    out = subprocess.run([str(exe), *args], cwd=work, capture_output=True, text=True, timeout=120)
    return out.stdout


def counts(work: Path) -> dict[str, int]:
    """mutmut's status counts from its cache database."""
    with sqlite3.connect(work / ".mutmut-cache") as db:
        rows = db.execute("select status, count(*) from Mutant group by status").fetchall()
    return dict(rows)


def survivor_ids(work: Path) -> list[int]:
    """The reported survivors; with ``UNTESTED=1`` also the mutants mutmut never reached
    (they are then tested here, the same way). ``PART=k/n`` in the environment takes
    every n-th from the k-th (to re-check in n processes at once)."""
    statuses = ("bad_survived", "untested") if os.environ.get("UNTESTED") else ("bad_survived",)
    marks = ", ".join("?" * len(statuses))
    with sqlite3.connect(work / ".mutmut-cache") as db:
        rows = db.execute(f"select id from Mutant where status in ({marks})", statuses).fetchall()
    ids = sorted(r[0] for r in rows)
    k, n = (int(x) for x in os.environ.get("PART", "0/1").split("/"))
    return ids[k::n]


def recheck(work: Path, command: str) -> dict:
    """Apply each survivor's diff to a copy of the repository and run ``command`` there."""
    confirmed, killed, not_applied, diffs = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "repo"
        shutil.copytree(
            ROOT,
            base,
            ignore=shutil.ignore_patterns(".venv", "runs", "mlruns", "*.db", "__pycache__", ".git"),
        )
        env = {**os.environ, "PYTHONPATH": str(base), "PYTHONDONTWRITEBYTECODE": "1"}
        env["OMP_NUM_THREADS"] = "1"
        for mid in survivor_ids(work):
            diff = _mutmut(work, "show", str(mid))
            diff = diff[diff.index("---") :] if "---" in diff else ""
            if not diff:
                not_applied.append(mid)
                continue
            target = base / diff.splitlines()[0].split()[1]
            original = target.read_text()
            ok = subprocess.run(
                ["patch", "-p0", "--silent", "--forward"],
                cwd=base,
                input=diff,
                text=True,
                capture_output=True,
            )
            if ok.returncode != 0:
                not_applied.append(mid)
                target.write_text(original)
                continue
            try:
                rc = subprocess.run(
                    command, shell=True, cwd=base, env=env, capture_output=True, timeout=1800
                ).returncode
            finally:
                target.write_text(original)
            if rc == 0:
                confirmed.append(mid)
                diffs.append(f"# mutant {mid}\n{diff}")
            else:
                killed.append(mid)
    part = os.environ.get("PART", "0/1").replace("/", "of")
    name = "confirmed_survivors.diff" if part == "0of1" else f"confirmed_survivors.{part}.diff"
    (work / name).write_text("\n".join(diffs))
    c = counts(work)
    total = sum(c.values())
    tested = total if os.environ.get("UNTESTED") else total - c.get("untested", 0)
    # a survivor whose diff no longer applies mutated code that is gone: counted as not killed
    still = len(confirmed) + len(not_applied)
    return {
        "work": str(work),
        "mutants": total,
        "tested": tested,
        "mutmut": c,
        "rechecked_killed": len(killed),
        "confirmed_survivors": confirmed,
        "not_applied": not_applied,
        "kill_rate": round((tested - still) / tested, 4) if tested else None,
    }


if __name__ == "__main__":
    print(json.dumps(recheck(Path(sys.argv[1]).resolve(), sys.argv[2])))
