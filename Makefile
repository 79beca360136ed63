# The two commands a newcomer needs:  make demo   and   make test
# Both set up what is missing first (scripts/setup.sh is idempotent; a no-op run takes seconds).
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV := . ./env.sh

.PHONY: help setup demo voice-demo test test-fast colcon-test bench bench-node clean

help:
	@echo "make demo         set up, then run the node on a synthetic camera with spoken-style commands"
	@echo "make voice-demo   the same, the commands spoken (espeak-ng) and transcribed (pocketsphinx)"
	@echo "make test         set up, then run the whole test suite (fails on any skipped test)"
	@echo "make colcon-test  colcon build + colcon test in a scratch workspace"
	@echo "make bench        model benchmark (CPU here; CUDA when available)"
	@echo "make bench-node   node benchmark (latency, rate, overhead)"
	@echo "make clean        remove build outputs (keeps the venv)"

setup:
	@scripts/setup.sh

demo: setup
	@$(ENV) && python -m evf_sam_ros.demo $(ARGS)

voice-demo: setup
	@$(ENV) && python -m evf_sam_ros.demo --voice $(ARGS)

test: setup
	@$(ENV) && scripts/run_tests.sh $(ARGS)

colcon-test: setup
	@$(ENV) && scripts/colcon_test.sh

bench: setup
	@$(ENV) && python bench/bench_model.py $(ARGS)

bench-node: setup
	@$(ENV) && python bench/bench_node.py $(ARGS)

clean:
	rm -rf build install log .setup-stamps env.sh
