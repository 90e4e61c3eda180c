#!/usr/bin/env bash
# Every figure the model card and the README publish, measured from scratch for one checkpoint:
#
#     scripts/measure.sh [CHECKPOINT] [--quick]
#
# 1. real-game data with the game's tile labels (simulator.collect; skipped where present),
# 2. the tile bank (games.crafter.tiles; the shipped default checkpoint only),
# 3. the semantic + PSNR evaluation, speed, revisits, live memory fps and the planner,
# 4. the model card and the README's results block from those reports.
# Each report records the command that wrote it. --quick: small runs, to check the pipeline;
# KEEP_TILES=1 keeps an already built bank.
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:-assets/crafter_memory}
QUICK=${2:-}
EVAL=$CKPT/eval
mkdir -p "$EVAL"

[ -d data/crafter ] || {
  python -m simulator.collect --out data/crafter --split train --episodes 40 --length 400
  python -m simulator.collect --out data/crafter --split heldout --episodes 60 --length 400
}
[ -d data/crafter_revisit ] || python -m simulator.collect --out data/crafter_revisit --revisit --episodes 16 --length 80
[ -d data/crafter_revisit_loop ] || python -m simulator.collect --out data/crafter_revisit_loop \
  --revisit --shape loop --first 100 --episodes 16 --length 80
# A view-memory model is measured with each store alone and both (memory.revisit --compare-stores)
# and with its memory on beside off (a lever row of the card).
STORES=$(python -c "import json,sys; c=json.load(open('$CKPT/config.json')); print('--compare-stores' if c['model'].get('view_memory') else '')")
NO_LAND=$(python -c "import json; c=json.load(open('$CKPT/config.json')); print('--no-land' if c.get('game', {}).get('land_prior') or c.get('diffusion', {}).get('land_prior') else '')")
MCFG=configs/crafter.yaml
[ -n "$STORES" ] && MCFG=configs/crafter_memory.yaml

if [ "$CKPT" = assets/crafter_memory ] && [ -z "$QUICK" ] && [ -z "${KEEP_TILES:-}" ]; then
  python -m games.crafter.tiles --data data/crafter --episodes 40
fi

if [ -n "$QUICK" ]; then
  python -m worldmodel.evaluation.evaluate --checkpoint "$CKPT" --data data/crafter --out "$EVAL" \
    --samples 16 --long 200 --semantic-worlds 4 --semantic-horizon 32
  python -m worldmodel.evaluation.bench --checkpoint "$CKPT" --frames 20 --out "$EVAL/bench.json"
  python -m memory.revisit --checkpoint "$CKPT" --data data/crafter_revisit --samples 2 \
    --memory-config $MCFG $STORES --out "$EVAL"
else
  python -m worldmodel.evaluation.evaluate --checkpoint "$CKPT" --data data/crafter --out "$EVAL"
  python -m worldmodel.evaluation.bench --checkpoint "$CKPT" --out "$EVAL/bench.json"
  python -m memory.revisit --checkpoint "$CKPT" --data data/crafter_revisit --samples 8 \
    --memory-config $MCFG $STORES --out "$EVAL"
  python -m memory.revisit --checkpoint "$CKPT" --data data/crafter_revisit --samples 8 \
    --memory-config $MCFG $STORES --warmup trip --out "$EVAL/revisit_trip"
  # Loops: back at the start by another path (the memory's default stores against off).
  python -m memory.revisit --checkpoint "$CKPT" --data data/crafter_revisit_loop --samples 8 \
    --memory-config $MCFG --out "$EVAL/revisit_loop"
  python -m memory.fps --checkpoint "$CKPT" --threads 1 --memory-config $MCFG \
    --out "$EVAL/memory_fps"
  if [ -n "$STORES" ]; then
    python -m memory.evaluate --checkpoint "$CKPT" --data data/crafter --samples 32 --long 0 \
      --out "$EVAL/levers/view_memory_on"
    python -m worldmodel.evaluation.evaluate --checkpoint "$CKPT" --data data/crafter --samples 32 --long 0 \
      --no-codebook $NO_LAND --out "$EVAL/levers/no_codebook"
  fi
  if [ -n "$NO_LAND" ]; then  # the same weights, revealed cells drawn by the denoiser alone
    python -m worldmodel.evaluation.evaluate --checkpoint "$CKPT" --data data/crafter --samples 32 --long 0 \
      --no-land --out "$EVAL/levers/no_land_prior"
  fi
  python run_sim.py plan --task both --episodes 12 --checkpoint "$CKPT" --population 16 \
    --horizon 5 --elites 4 --threads 1 --out "$EVAL/plan.json"
fi

LOGS=$(ls "$CKPT"/train_log*.jsonl 2>/dev/null | sort || true)
python -m worldmodel.evaluation.model_card --checkpoint "$CKPT" ${LOGS:+--train-log $LOGS} \
  $([ "$CKPT" = assets/crafter_memory ] && echo --readme README.md)
