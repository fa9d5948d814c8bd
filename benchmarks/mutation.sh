#!/usr/bin/env bash
# Mutation testing of the physics-bearing modules with mutmut 2.x (see docs/testing.md).
#
#   bash benchmarks/mutation.sh                 # every module below
#   bash benchmarks/mutation.sh md/detectors    # only the modules whose path contains this
#
# mutmut 2 writes each mutant into the source file it tests, so this never runs in the
# work tree: it copies the repository (without .venv, runs/, MLflow stores) to a scratch
# directory, imports ase_mlff from there (PYTHONPATH) and runs, per module, only the test
# files that cover it. Results (mutmut's "results" listing per module) go to
# $OUT (default: runs/mutation/<date>/). Heavy: hours on 2 cores; run it on an idle machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
FILTER="${1:-}"
OUT="${OUT:-$ROOT/runs/mutation/$(date +%Y%m%d-%H%M%S)}"

if ! "$PY" -c "import mutmut" 2>/dev/null; then
    "$PY" -m pip install "mutmut>=2.4,<3"
fi
MUTMUT="$(dirname "$PY")/mutmut"

# module -> the test files that cover it (fast ones; -x stops at the first failure); the
# runner string is split like a shell command line, so -k expressions keep their quotes
declare -A TESTS=(
    [ase_mlff/md/integrators.py]="tests/test_physics_strong.py tests/test_md_npt.py tests/test_md_integrators.py tests/test_energy_drift.py"
    [ase_mlff/md/state.py]="tests/test_physics_strong.py tests/test_md_integrators.py tests/test_energy_drift.py"
    [ase_mlff/md/detectors.py]="tests/test_md_stability.py tests/test_md_periodic.py tests/test_stability_measurement.py"
    [ase_mlff/metrics/stability.py]="tests/test_survival.py"
    [ase_mlff/agents/comparison.py]="tests/test_comparison.py -k 'not agent_runs'"
    [ase_mlff/training/sam.py]="tests/test_training_variants.py -k 'sam and not data_parallel'"
    [ase_mlff/training/trainer.py]="tests/test_training_variants.py -k 'formula_on_one_batch or bit_identical'"
)

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
echo "scratch copy: $WORK/repo   results: $OUT"

for module in "${!TESTS[@]}"; do
    [[ -n "$FILTER" && "$module" != *"$FILTER"* ]] && continue
    rm -rf "$WORK/repo"
    mkdir -p "$WORK/repo"
    (cd "$ROOT" && tar --exclude=./.venv --exclude=./runs --exclude=./mlartifacts \
        --exclude='./*.db' --exclude='*/__pycache__' -cf - .) | tar -xf - -C "$WORK/repo"
    tests="${TESTS[$module]}"
    name="$(echo "$module" | tr '/' '_' | sed 's/\.py$//')"
    echo "== $module  <-  $tests"
    (
        cd "$WORK/repo"
        export PYTHONPATH="$WORK/repo" OMP_NUM_THREADS=1
        # shellcheck disable=SC2086
        "$MUTMUT" run --paths-to-mutate "$module" --tests-dir tests --no-progress \
            --runner "$PY -m pytest -x -q -p no:cacheprovider $tests" || true
        "$MUTMUT" results >"$OUT/$name.txt" 2>&1 || true
    )
    tail -n 3 "$OUT/$name.txt" || true
done
echo "done: $OUT"
