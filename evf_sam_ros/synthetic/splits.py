"""Seed ranges of the synthetic scenes: training draws below ``VAL_SEED``; validation and held-out
test scenes use disjoint ranges above it (training, evaluation, the demo and tests all read them here)."""

VAL_SEED = 1_000_000
TEST_SEED = 2_000_000
