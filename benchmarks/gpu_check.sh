#!/usr/bin/env bash
# The GPU check in one command (benchmarks/gpu_check.py documents it): bench.py for DRSAN-32s
# and -48m x2 in float32 and bfloat16, then DRSAN-32s x2 trained with the short-budget recipe
# for the minutes left, 8 minutes in all. Every number goes to $OUT/gpu_check.json and the
# final checkpoint under $OUT/train/ (without $OUT: give --out DIR).
#
#     OUT=/tmp/gpu_check benchmarks/gpu_check.sh [--data_dir DIR] [--budget_min 8] ...
#
# Arguments go to gpu_check.py as they are; PYTHON names the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" benchmarks/gpu_check.py "$@"
