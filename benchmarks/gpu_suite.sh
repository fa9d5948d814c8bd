#!/usr/bin/env bash
# The model benchmarks on one device, in one go, each with its own time limit, so that
# one slow or failing script does not cost the others. Prints markdown; every script's
# output is also appended to $LOG.
#
#   bash benchmarks/gpu_suite.sh cuda            # the figures in docs/benchmarks.md
#   bash benchmarks/gpu_suite.sh cpu --smoke     # seconds: checks every script still runs
#
# On a machine without the project installed (a lent GPU machine), put the packages the
# image lacks on PYTHONPATH first; the scripts import ase_mlff from the repository root.
set -u
DEVICE=${1:-cuda}
SMOKE=${2:-}
LOG=${LOG:-/dev/null}
export PYTHONPATH="${PYTHONPATH:-}:$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONUNBUFFERED=1 CI=true
cd "$(dirname "$0")"

run() {  # run LIMIT_S NAME ARGS...
    local limit=$1 name=$2
    shift 2
    echo
    echo "## $name ($DEVICE)"
    local t0=$SECONDS
    timeout "$limit" python3 "$@" --device "$DEVICE" 2>&1 | grep -v -E "Warning|warn\(" | tee -a "$LOG"
    echo "(exit ${PIPESTATUS[0]}, $((SECONDS - t0)) s)" | tee -a "$LOG"
}

python3 -c "import torch; print('torch', torch.__version__, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" | tee -a "$LOG"
if [ "$SMOKE" = "--smoke" ]; then
    run 120 training training_throughput.py --steps 2 --warmup 1
    run 120 md md_throughput.py --replicas 2 --steps 2 --ase-steps 2 --check-every 1
    run 120 latency calculator_latency.py --no-xtb --no-compile --calls 3 --warmup 1
    run 300 torch-sim torch_sim_side_by_side.py --replicas 2 --steps 4 8 --no-compile
    run 120 neighbours neighbour_lists.py --repeats 1
    run 120 geometry geometry.py --repeat 1
    run 120 skin verlet_skin.py --steps 10
    exit 0
fi
run 60 training training_throughput.py --steps 100 --warmup 10
run 90 md md_throughput.py --replicas 1 64 256 1024 4096 --steps 40 --ase-steps 30
run 45 neighbours neighbour_lists.py --repeats 10
run 30 geometry geometry.py --repeat 10
run 45 skin verlet_skin.py --steps 300
run 75 latency calculator_latency.py --no-xtb --calls 200
run 120 torch-sim torch_sim_side_by_side.py --replicas 64 256 1024 --no-compile
