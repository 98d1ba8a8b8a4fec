#!/usr/bin/env bash
# collect_results.sh OUT: copies what docs/RESULTS.md is made from — each grid's results.csv,
# experiment.json, the cells' summary.json and command.txt, and the plots — from the output
# of scripts/reproduce_results.sh into results/ (committed), then writes docs/RESULTS.md from
# that copy. Model parts, adapters and logs stay behind (large, and not read by the tables).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:?usage: scripts/collect_results.sh OUT}
DEST=$ROOT/results
for grid in "$OUT"/*/; do
    grid=${grid%/}
    [[ -f "$grid/results.csv" ]] || continue
    name=$(basename "$grid")
    rm -rf "${DEST:?}/$name"
    mkdir -p "$DEST/$name"
    cp "$grid/results.csv" "$grid/experiment.json" "$DEST/$name/"
    for cell in "$grid"/cells/*/; do
        cell=${cell%/}
        [[ -f "$cell/summary.json" ]] || continue
        mkdir -p "$DEST/$name/cells/$(basename "$cell")"
        cp "$cell/summary.json" "$cell/command.txt" "$DEST/$name/cells/$(basename "$cell")/"
    done
    if [[ -d "$grid/plots" ]]; then
        mkdir -p "$DEST/$name/plots"
        cp "$grid"/plots/*.png "$DEST/$name/plots/" 2>/dev/null || true
    fi
done
# The order matters: the first folder holding a (scheme, N, M, codec) cell is the one the
# tables show (later cells of another budget become extra quality rows), and the sections
# follow the folders: memory first, then quality, compression and the shaped latency.
cd "$ROOT"
dirs=()
for name in memory-gpt2-124M quality-central quality-splitllm quality-two-tier quality-splitllm-equal-steps \
    compression latency-shaped; do
    [[ -d "results/$name" ]] && dirs+=("results/$name")
done
/usr/bin/python3 scripts/make_results_md.py "${dirs[@]}" -o docs/RESULTS.md
echo "collect_results: $DEST and docs/RESULTS.md written"
