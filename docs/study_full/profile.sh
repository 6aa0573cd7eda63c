#!/usr/bin/env bash
# The full profile at the recipes' defaults (16 epochs; joint models at init_lr 0.3, GMP-PT at
# Adam 1e-3, one-output models at 0.03), one seed at a time so that each finished seed holds
# F1-F14: the GMP-RI ladder, GMP-PT from its dense run, F12's attributes alone and F13's
# backdoored Smiling. Resumable: the same command continues where it stopped.
#
#   docs/study_full/profile.sh [FIRST_SEED [LAST_SEED]]      (default: seeds 0 to 2)
#
# OUT (default runs/lr03_16) is the sweep's folder, SPARSEBIAS the command (default
# .venv/bin/sparsebias), JOBS the runs trained at once (default 2; with GPUs, one per GPU).
# The last sweep writes OUT/study with the items/s measurements.
set -euo pipefail
out=${OUT:-runs/lr03_16}
sparsebias=${SPARSEBIAS:-.venv/bin/sparsebias}
jobs=${JOBS:-2}
first=${1:-0}
last=${2:-2}
export NM_DISABLE_ANALYTICS=1

backdoor=(--recipes recipes/resnet18_dense.yaml --recipes recipes/resnet18_95.yaml --recipes recipes/resnet18_99.yaml
          --data 'synthfaces:backdoor=Smiling/square/0.95/0.05/0.5' --single Smiling --no-joint --set init_lr=0.03)
for seed in $(seq "$first" "$last"); do
    echo "== seed $seed ($(date -u +%H:%M) UTC)"
    each=(--first-seed "$seed" --seeds 1 --jobs "$jobs" --no-speed --out "$out")
    "$sparsebias" sweep --recipes 'recipes/resnet18_[0-9d]*.yaml' "${each[@]}"
    "$sparsebias" sweep --recipes recipes/resnet18_dense.yaml --recipes 'recipes/resnet18_pt_*.yaml' --from-dense \
        "${each[@]}"
    "$sparsebias" sweep --recipes recipes/resnet18_dense.yaml --single Oval_Face,Big_Nose --no-joint \
        --set init_lr=0.03 "${each[@]}"
    "$sparsebias" sweep "${backdoor[@]}" "${each[@]}"
done
"$sparsebias" sweep "${backdoor[@]}" --first-seed "$first" --seeds $((last - first + 1)) --jobs "$jobs" --out "$out"
