#!/usr/bin/env bash
# The plaintext baselines, as a user runs them. Usage: bash benchmarks/baseline.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/baseline}
mkdir -p "$out"
mv=.venv/bin/medveil
data=../shared/data
/usr/bin/time -f "cxr64 train: %e s, peak RSS %M KB" \
  $mv train --data $data/cxr_pneumonia_64.npz --out "$out/cxr64.pt" --seed 0 --quiet
$mv evaluate --model "$out/cxr64.pt" --data $data/cxr_pneumonia_64.npz --json "$out/cxr64.json"
/usr/bin/time -f "chase train: %e s, peak RSS %M KB" \
  $mv train --data $data/segmentation/chase_db1 --size 480 --out "$out/chase.pt" --seed 0 --quiet
$mv evaluate --model "$out/chase.pt" --data $data/segmentation/chase_db1 --size 480 \
  --json "$out/chase.json"
