#!/bin/bash
# Every figure of assets/minetest's card and the README's first-person section, rerun (about 45 min
# on the 2-core CPU). Needs data/minetest (train and held-out) and data/minetest_revisit (the
# protocols), recorded as the README says.
set -e
CK=${1:-assets/minetest}
export OMP_NUM_THREADS=1
python -m memory.revisit_3d --checkpoint $CK --trips data/minetest_revisit --out $CK/eval/revisits
python -m memory.revisit_3d --checkpoint $CK --trips data/minetest_revisit --modes off lora both \
    --memory-config configs/minetest_memory.yaml --out $CK/eval/revisits_fast_lora
python -m memory.fps --checkpoint $CK --data data/minetest_revisit/full_turn --actions 1 2 3 4 5 6 7 8 \
    --frames 40 --rounds 4 --threads 1 --out $CK/eval
unset OMP_NUM_THREADS
python -m worldmodel.evaluation.bench --checkpoint $CK --frames 80 --batch 1 --threads 2 \
    --out $CK/eval/bench.json
python -m worldmodel.evaluation.evaluate --checkpoint $CK --data data/minetest --prefix heldout_ \
    --samples 32 --horizons 1 4 16 64 --batch 8 --long 200 --long-worlds 2 --semantic-worlds 10 \
    --semantic-horizon 64 --out $CK/eval
python -m memory.evaluate --checkpoint $CK --data data/minetest --prefix heldout_ \
    --samples 32 --horizons 1 4 16 64 --batch 8 --long 200 --long-worlds 2 --semantic-worlds 10 \
    --semantic-horizon 64 --out $CK/eval/memory
python -m worldmodel.evaluation.model_card --checkpoint $CK
