#!/usr/bin/env bash
# One-call GPU check (issue 12): the CUDA tests, CPU vs GPU agreement of transform, and fit / transform
# times at 1e5 and 1e6 rows on the GPU against the CPU (1e5 only on the CPU). About 8 minutes at most
# (the caps add up to 455 s):
# every part runs under its own cap (`timeout`), a failing or slow part does not stop the others, and
# the report says "not run" for what did not finish. Results: a Markdown report on stdout, also written
# to $OUT/gpu_check.md when OUT is set (the JSON lines and logs beside it).
#
#   bash benchmarks/gpu_check.sh                      # on the GPU machine
#   GPU_CHECK_SMALL=1 bash benchmarks/gpu_check.sh    # end-to-end rehearsal on a CPU machine (small sizes, device cpu)
#
# Needs python with torch, numpy, scikit-learn and pytest; the package is imported from this checkout.
set -u
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
DIR=${OUT:-$(mktemp -d)}
mkdir -p "$DIR"
RESULTS="$DIR/gpu_check.jsonl"
: >"$RESULTS"

if [ "${GPU_CHECK_SMALL:-0}" = 1 ]; then
    DEVICE=cpu; SMALL_ROWS=2000; LARGE_ROWS=20000; AGREE_ROWS=2000
else
    DEVICE=cuda; SMALL_ROWS=100000; LARGE_ROWS=1000000; AGREE_ROWS=20000
fi

"$PY" -c 'import torch; print(torch.__version__, torch.cuda.is_available())' || { echo "FAIL: torch does not import"; exit 2; }
if [ "$DEVICE" = cuda ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "FAIL: torch sees no CUDA device (GPU_CHECK_SMALL=1 rehearses the check on the CPU)"
    exit 2
fi

# GPU_CHECK_PARTS: the parts to run (default all), e.g. "env cuda-tests agreement timing-small" when device time is short
PARTS=${GPU_CHECK_PARTS:-"env cuda-tests agreement timing-small timing-large timing-cpu"}

# part NAME CAP_SECONDS COMMAND...: run under a time cap, log it, record exit code and seconds
part() {
    local name=$1 cap=$2 start rc ms
    shift 2
    case " $PARTS " in *" ${name%%-[0-9]*} "*|*" $KEY "*) ;; *) echo "=== $name: skipped (GPU_CHECK_PARTS) ==="; return ;; esac
    echo "=== $name (cap ${cap}s) ==="
    start=$(date +%s%N)
    timeout --kill-after=10 "$cap" "$@" 2>&1 | tee "$DIR/$name.log"
    rc=${PIPESTATUS[0]}
    ms=$(( ($(date +%s%N) - start) / 1000000 ))
    echo "=== $name: exit $rc after $ms ms ==="
    printf '{"kind": "part", "name": "%s", "rc": %d, "seconds": %d.%03d}\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) >>"$RESULTS"
}

KEY=env part env 30 "$PY" benchmarks/gpu_check.py env --results "$RESULTS"
KEY=cuda-tests part cuda-tests 60 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_estimator.py tests/test_persistence.py -k "cuda or device"
KEY=agreement part agreement 50 "$PY" benchmarks/gpu_check.py agreement --results "$RESULTS" --device "$DEVICE" --rows "$AGREE_ROWS"
KEY=timing-small part "timing-$DEVICE-$SMALL_ROWS" 45 "$PY" benchmarks/gpu_check.py timing --results "$RESULTS" --device "$DEVICE" --rows "$SMALL_ROWS"
KEY=timing-large part "timing-$DEVICE-$LARGE_ROWS" 180 "$PY" benchmarks/gpu_check.py timing --results "$RESULTS" --device "$DEVICE" --rows "$LARGE_ROWS"
if [ "$DEVICE" != cpu ]; then
    KEY=timing-cpu part "timing-cpu-$SMALL_ROWS" 90 "$PY" benchmarks/gpu_check.py timing --results "$RESULTS" --device cpu --rows "$SMALL_ROWS"
fi

"$PY" benchmarks/gpu_check.py report --results "$RESULTS" --rows-list "$SMALL_ROWS" "$LARGE_ROWS" \
    --pytest-log "$DIR/cuda-tests.log" --markdown "$DIR/gpu_check.md"
