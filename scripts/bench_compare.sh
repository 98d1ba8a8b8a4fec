#!/usr/bin/env bash
# bench_compare.sh: times one LoRA training step of the same model shape in splitllm
# (`splitllm bench step`) and in PyTorch (bench/bench_step_torch.py), then prints both
# results and the ratios splitllm / PyTorch of tokens per second and of peak RSS.
#
# For: `make bench`. Both programs print on their last line `key=value` pairs including
# tokens_per_s and peak_rss_bytes; this script reads those two keys. Both get the same
# number of threads (THREADS, default: nproc). Not for: correctness checks (the tests are).
#
# Environment: SPLITLLM_BIN (default build/splitllm), PYTHON (default /usr/bin/python3),
# THREADS (default nproc), BENCH_SHAPE (the shared flags, default below).
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SPLITLLM_BIN=${SPLITLLM_BIN:-$REPO_ROOT/build/splitllm}
PYTHON=${PYTHON:-/usr/bin/python3}
THREADS=${THREADS:-$(nproc)}
BENCH_SHAPE=${BENCH_SHAPE:---preset 124M --batch 4 --seq 128 --lora-rank 8 --lora-targets q,v}

# last_value OUTPUT KEY: prints the value of KEY among the key=value pairs of the last
# non-empty line of OUTPUT; returns 1 if it is not there.
last_value() {
    local last
    last=$(printf '%s\n' "$1" | awk 'NF { line = $0 } END { print line }')
    printf '%s\n' "$last" | tr -s '[:blank:]' '\n' | awk -F= -v key="$2" '$1 == key { print $2; found = 1 } END { exit !found }'
}

OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/splitllm-bench.XXXXXX")
trap 'rm -rf "$OUT_DIR"' EXIT

# run_side NAME COMMAND...: runs one side, showing its output as it comes and keeping a
# copy in $OUT_DIR/NAME.log.
run_side() {
    local name=$1
    shift
    echo "bench: $name: $*"
    if ! "$@" 2>&1 | tee "$OUT_DIR/$name.log"; then
        echo "bench: error: $name failed (its output is above)" >&2
        return 1
    fi
}

if [[ ! -x "$SPLITLLM_BIN" ]]; then
    echo "bench: error: $SPLITLLM_BIN not found or not executable; run 'make build' first" >&2
    exit 1
fi

ok=1
# shellcheck disable=SC2086 # BENCH_SHAPE is a list of flags, split on purpose
run_side splitllm env OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" \
    "$SPLITLLM_BIN" bench step $BENCH_SHAPE || ok=0
# shellcheck disable=SC2086
run_side pytorch "$PYTHON" "$REPO_ROOT/bench/bench_step_torch.py" $BENCH_SHAPE --threads "$THREADS" || ok=0
if [[ $ok -eq 0 ]]; then exit 1; fi

values=()
for side in splitllm pytorch; do
    for key in tokens_per_s peak_rss_bytes; do
        if ! value=$(last_value "$(cat "$OUT_DIR/$side.log")" "$key"); then
            echo "bench: error: the last line printed by the $side side has no $key=VALUE" >&2
            exit 1
        fi
        values+=("$value")
    done
done

echo
echo "bench: shape: $BENCH_SHAPE, threads $THREADS"
awk -v ct="${values[0]}" -v cr="${values[1]}" -v tt="${values[2]}" -v tr="${values[3]}" 'BEGIN {
    printf "%-10s %14s %16s\n", "", "tokens/s", "peak RSS MiB"
    printf "%-10s %14.1f %16.1f\n", "splitllm", ct, cr / 1048576
    printf "%-10s %14.1f %16.1f\n", "pytorch", tt, tr / 1048576
    printf "ratio splitllm/pytorch: tokens/s %.2fx, peak RSS %.2fx\n", ct / tt, cr / tr
}'
