#!/usr/bin/env bash
# Mutation testing of the physics-bearing modules with mutmut 2.x (see docs/testing.md).
#
#   bash benchmarks/mutation.sh                 # every module below
#   bash benchmarks/mutation.sh md/detectors    # only the modules whose path contains this
#   OUT=runs/mutation/<run> RESUME=1 bash benchmarks/mutation.sh md/detectors   # go on
#
# mutmut 2 writes each mutant into the source file it tests, so this never runs in the
# work tree: per module it copies the repository (without .venv, runs/, MLflow stores) to
# $OUT/work/<module>/, imports ase_mlff from there (PYTHONPATH) and runs only the test files
# that cover the module. The copy and mutmut's cache stay there, so `mutmut show <id>` can
# be run in it afterwards. For each module $OUT gets <module>.txt (mutmut's results) and
# <module>.survivors.diff (the diff of every surviving mutant). Heavy: hours on 2 cores;
# run it on an idle machine.
#
# mutmut 2 counts a mutant as killed only when the tests exit with 1; the runner maps any
# failure (pytest's 2 for a module that no longer imports, a crash) to 1. Survivors of
# older runs are re-checked outside mutmut by benchmarks/mutation_recheck.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
FILTER="${1:-}"
OUT="$(realpath -m "${OUT:-$ROOT/runs/mutation/$(date +%Y%m%d-%H%M%S)}")"

if ! "$PY" -c "import mutmut, whatthepatch" 2>/dev/null; then
    "$PY" -m pip install "mutmut>=2.4,<3" whatthepatch
fi
BIN="$(dirname "$PY")"
# mutmut's own timeout never fires for a test that prints nothing (an endless MD loop), so
# every test command has a wall-clock limit; a mutant that hangs the tests is caught
PYTEST="timeout ${MUTANT_TIMEOUT:-600} $PY -m pytest -x -q -p no:cacheprovider"

# module -> the tests that cover it. Fast tests run first and -x stops at the first
# failure, so a killed mutant costs seconds; the few slow tests (whole shipped datasets)
# run only for mutants that survived the fast ones.
SLOW_DET="exact_on_every or no_bond_alarm or silent_on_reference or ase_driven_path"
DET_FILES="tests/test_md_stability.py tests/test_md_periodic.py tests/test_stability_measurement.py"
declare -A TESTS=(
    [ase_mlff/md/integrators.py]="$PYTEST tests/test_physics_strong.py tests/test_md_integrators.py tests/test_md_npt.py tests/test_md_protocol.py tests/test_energy_drift.py"
    [ase_mlff/md/state.py]="$PYTEST tests/test_physics_strong.py tests/test_md_integrators.py tests/test_energy_drift.py tests/test_md_inputs.py"
    [ase_mlff/md/detectors.py]="$PYTEST $DET_FILES -k 'not ($SLOW_DET)' && $PYTEST $DET_FILES -k '$SLOW_DET'"
    [ase_mlff/metrics/stability.py]="$PYTEST tests/test_survival.py"
    [ase_mlff/training/sam.py]="$PYTEST tests/test_training_variants.py -k 'sam and not data_parallel'"
    [ase_mlff/training/trainer.py]="$PYTEST tests/test_training_variants.py -k 'formula_on_one_batch or several_weighted or bit_identical or element_balanced_loss_and or probe_most_stable or data_parallel_sam or progress_bar_only'"
)
# For the trainer, the SAM and resume paths only (not validation, the probe, logging): the
# lines of these functions are mutated (benchmarks/mutation_lines.py writes the patch that
# mutmut's --use-patch-file reads).
declare -A ONLY=(
    [ase_mlff/training/trainer.py]="Trainer._save_state Trainer.try_resume Trainer.train_epoch Trainer.__init__:self.sam"
)
ORDER=(ase_mlff/md/integrators.py ase_mlff/md/state.py ase_mlff/training/sam.py
       ase_mlff/training/trainer.py ase_mlff/md/detectors.py ase_mlff/metrics/stability.py)
# ONLY_LINES=A-B restricts a run to those lines of the module, e.g. to run the two halves
# of a long module in two runs at once (each on its own work copy, OUT apart)
if [[ -n "${ONLY_LINES:-}" && -n "$FILTER" ]]; then
    for m in "${ORDER[@]}"; do if [[ "$m" == *"$FILTER"* ]]; then ONLY[$m]="lines:$ONLY_LINES"; fi; done
fi

descendants() {
    local c
    for c in $(pgrep -P "$1"); do
        echo "$c"
        descendants "$c"
    done
}

mkdir -p "$OUT"
echo "results: $OUT"
for module in "${ORDER[@]}"; do
    [[ -n "$FILTER" && "$module" != *"$FILTER"* ]] && continue
    name="$(echo "$module" | tr '/' '_' | sed 's/\.py$//')"
    work="$OUT/work/$name"
    if [[ -n "${RESUME:-}" && -f "$work/.mutmut-cache" ]]; then
        echo "   resuming in $work (its own copy of the code and tests)"
        [[ -f "$work/.pristine_source" ]] || git -C "$ROOT" show "HEAD:$module" >"$work/.pristine_source"
    else
        rm -rf "$work"
        mkdir -p "$work"
        (cd "$ROOT" && tar --exclude=./.venv --exclude=./runs --exclude=./mlartifacts \
            --exclude='./*.db' --exclude='*/__pycache__' --exclude=./.mutmut-cache -cf - .) \
            | tar -xf - -C "$work"
        cp "$work/$module" "$work/.pristine_source"
    fi
    runner="${TESTS[$module]}"
    echo "== $(date +%H:%M:%S) $module  <-  $runner"
    (
        cd "$work"
        export PYTHONPATH="$work" OMP_NUM_THREADS=1
        extra=()
        if [[ -n "${ONLY[$module]:-}" ]]; then
            # shellcheck disable=SC2086
            "$PY" "$ROOT/benchmarks/mutation_lines.py" "$module" ${ONLY[$module]} >.only.patch
            extra=(--use-patch-file .only.patch)
        fi
        # mutmut 2.5 sometimes fails half-way on a cache lookup (pony ORM) and then hangs
        # without running tests: a watchdog stops it after 2 idle minutes (no test
        # process), and a rerun resumes from the cache, until no mutant is left untested
        for _ in 1 2 3 4 5 6 7 8; do
            # a mutmut stopped mid-mutant leaves the mutant on disk: start from the pristine copy
            cp .pristine_source "$module" && rm -f "$module.bak"
            "$BIN/mutmut" run --paths-to-mutate "$module" --tests-dir tests --no-progress \
                --simple-output "${extra[@]}" --runner "bash -c \"($runner) || exit 1\"" >>"$OUT/$name.log" 2>&1 &
            pid=$! idle=0
            while kill -0 "$pid" 2>/dev/null; do
                sleep 10
                # a test process anywhere below mutmut (it runs them from a worker process)
                if descendants "$pid" | xargs -r ps -o args= -p 2>/dev/null | grep -q pytest; then
                    idle=0
                else
                    idle=$((idle + 10))
                fi
                if ((idle >= 120)); then pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; fi
            done
            wait "$pid" || true
            "$BIN/mutmut" results 2>&1 | grep -q "^Untested" || break
        done
        "$BIN/mutmut" results >"$OUT/$name.txt" 2>&1 || true
        "$BIN/mutmut" show all >"$OUT/$name.survivors.diff" 2>&1 || true
    )
    echo "   $(date +%H:%M:%S) $(grep -c '^---' "$OUT/$name.survivors.diff" || true) surviving mutants"
done
echo "done: $OUT"
