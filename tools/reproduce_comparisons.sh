#!/usr/bin/env bash
# Regenerates the runs behind the equal-iteration comparisons of projects/Poseur/README.md and
# projects/RLE/README.md (every step skips a run whose model_final.pth exists, so the steps can be
# spread over several sessions; each run logs to its OUTPUT_DIR/log.txt):
#
#   tools/reproduce_comparisons.sh topdown   # Poseur, RLE integral, RLE GAP + FC: 2300 iterations x 32
#                                            # each, then Poseur's coarse proposal alone on the same model
#   tools/reproduce_comparisons.sh rcnn      # Keypoint R-CNN: the heatmap run, then from its checkpoint
#                                            # the same number of iterations with the heatmap, RLE and
#                                            # Poseur heads
#
# OUT (default output/comparisons) holds the runs; ITERS the top-down iterations (default 2300, the
# Poseur recipe's), RCNN_ITERS the fine-tuning iterations (default 600).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/comparisons}
ITERS=${ITERS:-2300}
RCNN_ITERS=${RCNN_ITERS:-600}

train() {  # train CONFIG OUTPUT_DIR [KEY VALUE ...]
  local config=$1 dir=$2
  shift 2
  if [ -f "$dir/model_final.pth" ]; then
    echo "[reproduce] $dir/model_final.pth exists: skipped"
    return
  fi
  if [ -f "$dir/last_checkpoint" ]; then
    "$PY" train_net.py --config-file "$config" --resume OUTPUT_DIR "$dir" "$@"
  else
    "$PY" train_net.py --config-file "$config" OUTPUT_DIR "$dir" "$@"
  fi
}

schedule() {  # the step schedule of a run of $1 iterations: 80% and 94% of it
  echo "SOLVER.MAX_ITER $1 SOLVER.STEPS ($(( $1 * 80 / 100 )),$(( $1 * 94 / 100 )))"
}

topdown() {
  # shellcheck disable=SC2046
  train configs/Poseur/synthetic_poseur_topdown.yaml "$OUT/poseur_topdown_$ITERS" $(schedule "$ITERS")
  "$PY" train_net.py --config-file configs/Poseur/synthetic_poseur_topdown.yaml --eval-only \
    OUTPUT_DIR "$OUT/poseur_topdown_$ITERS" MODEL.WEIGHTS "$OUT/poseur_topdown_$ITERS/model_final.pth" \
    MODEL.POSEUR.TEST_OUTPUT coarse
  # shellcheck disable=SC2046
  train configs/RLE/synthetic_rle_topdown.yaml "$OUT/rle_integral_topdown_$ITERS" $(schedule "$ITERS")
  # shellcheck disable=SC2046
  train configs/RLE/synthetic_rle_gap_topdown.yaml "$OUT/rle_gap_topdown_$ITERS" $(schedule "$ITERS")
}

rcnn() {
  train configs/Baselines/synthetic_keypoint_rcnn_heatmap.yaml "$OUT/rcnn_heatmap_base"
  local base="$OUT/rcnn_heatmap_base/model_final.pth"
  # shellcheck disable=SC2046
  train configs/Baselines/synthetic_keypoint_rcnn_heatmap.yaml "$OUT/rcnn_heatmap_finetune" \
    MODEL.WEIGHTS "$base" $(schedule "$RCNN_ITERS")
  # shellcheck disable=SC2046
  train configs/RLE/synthetic_rle_rcnn.yaml "$OUT/rcnn_rle_finetune" MODEL.WEIGHTS "$base" $(schedule "$RCNN_ITERS")
  # shellcheck disable=SC2046
  train configs/Poseur/synthetic_poseur_rcnn.yaml "$OUT/rcnn_poseur_finetune" MODEL.WEIGHTS "$base" \
    $(schedule "$RCNN_ITERS")
}

case "${1:-}" in
  topdown) topdown ;;
  rcnn) rcnn ;;
  all) topdown; rcnn ;;
  *) echo "usage: $0 topdown|rcnn|all" >&2; exit 2 ;;
esac
