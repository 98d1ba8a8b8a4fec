#!/usr/bin/env bash
# reproduce_results.sh: the runs behind docs/RESULTS.md, then the document itself.
#
#   1. memory and time on the GPT-2 124M shape (random weights: memory and time do not depend
#      on the values): every scheme at N=16 users, M=2 edges, cuts 2,6, every tier its own
#      process; 1 round of 2 local steps, batch 4, sequence 128, LoRA rank 8 on q and v;
#   2. quality on stories260K fine-tuned on E2E (dev set for training, non-IID over 8 users by
#      Dirichlet(0.5) over eatType, 10% held out for evaluation), the same budget of 160
#      optimizer steps of batch 8 in every scheme: central 160 steps; splitllm 2 streams x 5
#      local steps x 16 rounds; sfl, sl and fl 8 users x 5 local steps x 4 rounds; and
#      splitllm once more with 32 rounds (as many sequential steps as central);
#   3. the wireless model's latency against measured time with --shape-links (stories260K);
#   4. compression of what crosses the links (splitllm, the quality setting): bytes saved
#      against eval-loss cost.
# Every step resumes: finished cells are not run again (docs/EXPERIMENTS.md).
#
# Usage: scripts/reproduce_results.sh [OUT]   (default out/results; about 40 min on 2 cores)
# Then:  scripts/collect_results.sh OUT   (copies the tables into results/, writes docs/RESULTS.md)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/out/results}
BIN=${SPLITLLM_BIN:-$ROOT/build/splitllm}
A=$ROOT/assets
mkdir -p "$OUT"

# 1. memory and time, GPT-2 124M shape
if [[ ! -f "$OUT/gpt2-124M.bin" ]]; then
    "$BIN" init-model --arch gpt2 --preset 124M --seed 1 --out "$OUT/gpt2-124M.bin"
fi
"$BIN" experiment --model "$OUT/gpt2-124M.bin" --model-name gpt2-124M \
    --tokenizer "$A/tokenizers/gpt2/encoder.json" --input "$A/datasets/e2e_devset.csv" --format e2e \
    --max-seq 128 --partition dirichlet --key eatType --alpha 0.5 --seed 1 \
    --schemes splitllm,sfl,sl,fl,central --users 16 --edges 2 --cuts 2:6 \
    --rounds 1 --local-steps 2 --batch 4 --seq 128 --lora-rank 8 --lora-targets q,v --eval-batches 2 \
    --timeout-ms 300000 --out "$OUT/memory-gpt2-124M"
# the same at N=4 and N=8 (and M=1, 2, 4 for splitllm), for the plots of memory against N
"$BIN" experiment --model "$OUT/gpt2-124M.bin" --model-name gpt2-124M \
    --tokenizer "$A/tokenizers/gpt2/encoder.json" --input "$A/datasets/e2e_devset.csv" --format e2e \
    --max-seq 128 --partition dirichlet --key eatType --alpha 0.5 --seed 1 \
    --schemes splitllm,sfl,sl --users 4,8 --edges 1,2,4 --cuts 2:6 \
    --rounds 1 --local-steps 2 --batch 4 --seq 128 --lora-rank 8 --lora-targets q,v --eval-batches 2 \
    --timeout-ms 300000 --out "$OUT/memory-gpt2-124M"

# 2. quality, stories260K on E2E, the same number of optimizer steps in every scheme
Q="--model $A/models/stories260K/stories260K.bin --model-name stories260K
   --tokenizer $A/models/stories260K/tok512.bin --input $A/datasets/e2e_devset.csv --format e2e
   --max-seq 256 --partition dirichlet --key eatType --alpha 0.5 --seed 1 --users 8 --edges 2 --cuts 2:4
   --local-steps 5 --batch 8 --seq 256 --lora-rank 8 --lora-targets all --lr 3e-3 --eval-batches 30 --threads"
# shellcheck disable=SC2086
"$BIN" experiment $Q --schemes central --rounds 32 --out "$OUT/quality-central"
# shellcheck disable=SC2086
"$BIN" experiment $Q --schemes splitllm --rounds 16 --out "$OUT/quality-splitllm"
# shellcheck disable=SC2086
"$BIN" experiment $Q --schemes sfl,sl,fl --rounds 4 --out "$OUT/quality-two-tier"
# and splitllm with as many sequential optimizer steps as central (2x its sample budget)
# shellcheck disable=SC2086
"$BIN" experiment $Q --schemes splitllm --rounds 32 --out "$OUT/quality-splitllm-equal-steps"

# 3. latency: links paced to the wireless model
# shellcheck disable=SC2086
"$BIN" experiment $Q --schemes splitllm,sfl --rounds 2 --run-args '--shape-links' --out "$OUT/latency-shaped"

# 4. compression on the links
# shellcheck disable=SC2086
"$BIN" experiment $Q --schemes splitllm --rounds 16 --compress none,fp16,bf16,int8,topk:0.1 --out "$OUT/compression"
