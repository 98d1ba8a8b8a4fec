# Makefile: the short commands for a fresh Debian 12 machine — setup, build, test, demo, bench.
# It only drives scripts/ and CMake; the build itself is described in CMakeLists.txt.
#
#   make demo    install dependencies and assets, build, fine-tune stories260K with LoRA by
#                three-tier split learning (8 users, 2 edges, 1 cloud) on E2E
#   make test    install, build, run all tests, then all tests again under ASan/UBSan
#   make bench   time one LoRA training step here and in PyTorch, print the ratios
#
# Variables (override on the command line: make build BUILD_DIR=build-mine JOBS=2):
BUILD_DIR      ?= build
ASAN_BUILD_DIR ?= build-asan
JOBS           ?= $(shell nproc)
CTEST_JOBS     ?= 2
# The demo: E2E dev set (training) tokenized for stories260K into 8 non-IID users (Dirichlet
# over eatType), then SplitLLM fine-tuning — users hold the embedding and blocks [0,2), the
# 2 edges blocks [2,4), the cloud block 4 and the head — as threads over inproc://; eval
# loss before/after (printed by run) and a generation for an E2E prompt before and after.
DEMO_MODEL     ?= assets/models/stories260K/stories260K.bin
DEMO_TOKENIZER ?= assets/models/stories260K/tok512.bin
DEMO_PREPARE   ?= --input assets/datasets/e2e_devset.csv --format e2e --max-seq 256 --users 8 \
                  --partition dirichlet --key eatType --alpha 0.5 --seed 1
DEMO_ARGS      ?= --users 8 --edges 2 --cuts 2,4 --rounds 8 --local-steps 10 --batch 8 --seq 256 --lr 3e-3 \
                  --warmup 10 --lora-rank 8 --lora-targets all --eval-batches 30
DEMO_PROMPT    ?= name[The Eagle], eatType[coffee shop], food[French], priceRange[moderate], area[riverside]

SHELL := /bin/bash

.PHONY: all setup build test test-release test-asan demo bench clean
# The steps run one after another (setup before build before tests); each parallelises inside.
.NOTPARALLEL:

all: build

# System packages (apt, only the missing ones) and the verified assets under assets/.
setup:
	bash scripts/setup.sh
	bash scripts/assets.sh

build:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD_DIR) -j$(JOBS)

# The whole suite twice: an optimised build, then a sanitizer build in which heavy tests
# shrink (SPLITLLM_TEST_QUICK=1). Zero tests found is not a failure; a failing test is.
test: setup test-release test-asan

test-release: build
	ctest --test-dir $(BUILD_DIR) --output-on-failure --no-tests=ignore -j$(CTEST_JOBS)

test-asan:
	cmake -S . -B $(ASAN_BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSPLITLLM_SANITIZE=ON
	cmake --build $(ASAN_BUILD_DIR) -j$(JOBS)
	SPLITLLM_TEST_QUICK=1 ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --test-dir $(ASAN_BUILD_DIR) --output-on-failure --no-tests=ignore -j$(CTEST_JOBS)

demo: setup build
	mkdir -p out
	./$(BUILD_DIR)/splitllm prepare --tokenizer $(DEMO_TOKENIZER) $(DEMO_PREPARE) --out out/demo-data
	@echo "== generation before fine-tuning =="
	./$(BUILD_DIR)/splitllm generate --model $(DEMO_MODEL) --tokenizer $(DEMO_TOKENIZER) \
	  --prompt $$'$(DEMO_PROMPT)\n' --steps 100 --temperature 0
	./$(BUILD_DIR)/splitllm run --model $(DEMO_MODEL) --data out/demo-data --out out/demo $(DEMO_ARGS)
	@echo "== generation after fine-tuning =="
	./$(BUILD_DIR)/splitllm generate --model $(DEMO_MODEL) --tokenizer $(DEMO_TOKENIZER) \
	  --lora out/demo/lora.safetensors --prompt $$'$(DEMO_PROMPT)\n' --steps 100 --temperature 0

bench: setup build
	SPLITLLM_BIN=./$(BUILD_DIR)/splitllm bash scripts/bench_compare.sh

# Build folders and demo output only; assets/ (links to the verified mirror) stays.
clean:
	rm -rf $(BUILD_DIR) $(ASAN_BUILD_DIR) out
