#!/usr/bin/env bash
# The GPU rows of the benchmark tables, in one go on a CUDA machine (budget: under 5 minutes).
#
#   bash bench/gpu.sh                 # CUDA: no-sync test, overhead table (base SLAT VAE with fp16
#                                     # autocast + GradScaler on spconv's CUDA path, transformer, mlp),
#                                     # the sampled step's profile; everything also written to $OUT
#   bash bench/gpu.sh --device cpu    # smoke run of this script on a CPU (tiny sizes, a few seconds each)
#
# Needs the project installed with a CUDA torch and spconv (SLATMON_KEEP_TORCH=1 bash scripts/setup.sh
# on a machine with its own CUDA torch). PYTHON picks the interpreter (default .venv/bin/python, else python).
# Each part has its own time limit and a failing part does not stop the others; the exit status is
# that of the last failure.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=cuda
[ "${1:-}" = "--device" ] && DEVICE=${2:?--device cuda|cpu}
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUT=${OUT:-bench-gpu-out}
mkdir -p "$OUT"
status=0
part() {  # part NAME SECONDS CMD...: run with a time limit, tee to $OUT/NAME.txt
    local name=$1 limit=$2
    shift 2
    echo "== $name ($limit s max): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    [ "$rc" = 0 ] || { echo "== $name FAILED (exit $rc)"; status=$rc; }
}

"$PY" - <<'PY' | tee "$OUT/env.txt"
import json, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available()}
if torch.cuda.is_available():
    info["gpu"] = torch.cuda.get_device_name(0)
try:
    import spconv
    info["spconv"] = getattr(spconv, "__version__", "?")
except ImportError as exc:
    info["spconv"] = f"missing: {exc}"
print(json.dumps(info))
PY

if [ "$DEVICE" = cuda ]; then
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
    # torch.cuda.set_sync_debug_mode("error") around unsampled steps; must PASS here, not skip
    part nosync 45 "$PY" -m pytest -q -rA tests/monitor/test_nosync.py
    part overhead 200 "$PY" -m bench.overhead --device cuda --workloads slat-base transformer mlp \
        --steps 20 --threads "$OMP_NUM_THREADS" --json "$OUT/overhead.json"
    part profile 45 "$PY" -m bench.profile_step --device cuda --workload slat-base --steps 10
else
    export OMP_NUM_THREADS=1
    part nosync 120 "$PY" -m pytest -q -rA tests/monitor/test_nosync.py
    part overhead 300 "$PY" -m bench.overhead --device cpu --workloads slat transformer --steps 1 --warmup 1 \
        --no-memory --json "$OUT/overhead.json"
    part profile 120 "$PY" -m bench.profile_step --device cpu --workload slat --steps 2
fi
echo "== done; outputs in $OUT (exit $status)"
exit $status
