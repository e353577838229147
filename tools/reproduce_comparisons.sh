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
#   tools/reproduce_comparisons.sh logocap   # LOGO-CAP's synthetic recipe, then the heatmap Keypoint R-CNN
#                                            # from scratch for the same training time on this machine
#                                            # (its schedule fitted by tools/time_recipe.py --fit-log), both
#                                            # evaluated on whole synthetic_pose_val images; prints both and
#                                            # LOGO-CAP's ceiling / upper bound / ADAPTATION table
#   tools/reproduce_comparisons.sh ablations # the top-down runs with the authors' flow-term count
#                                            # (MODEL.RLE.OFFICIAL_FLOW_TERM per_coordinate), Poseur also
#                                            # with the previous noise, and Poseur with EMSDA's offsets
#                                            # initialised on the finest level (MODEL.POSEUR.OFFSET_INIT)
#
# OUT (default output/comparisons) holds the runs; ITERS the top-down iterations (default 2300, the
# Poseur recipe's), RCNN_ITERS the fine-tuning iterations (default 500).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-output/comparisons}
ITERS=${ITERS:-2300}
RCNN_ITERS=${RCNN_ITERS:-500}

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
  train projects/Poseur/configs/synthetic_poseur_topdown.yaml "$OUT/poseur_topdown_$ITERS" $(schedule "$ITERS")
  coarse_eval "$OUT/poseur_topdown_$ITERS"
  # shellcheck disable=SC2046
  train projects/RLE/configs/synthetic_rle_topdown.yaml "$OUT/rle_integral_topdown_$ITERS" $(schedule "$ITERS")
  # shellcheck disable=SC2046
  train projects/RLE/configs/synthetic_rle_gap_topdown.yaml "$OUT/rle_gap_topdown_$ITERS" $(schedule "$ITERS")
}

coarse_eval() {  # the decoder's ablation: Poseur run $1's model with its coarse proposal alone
  "$PY" train_net.py --config-file projects/Poseur/configs/synthetic_poseur_topdown.yaml --eval-only \
    OUTPUT_DIR "$1" MODEL.WEIGHTS "$1/model_final.pth" MODEL.POSEUR.TEST_OUTPUT coarse "${@:2}"
}

ablations() {
  local authors="MODEL.RLE.OFFICIAL_FLOW_TERM per_coordinate"
  # shellcheck disable=SC2046,SC2086
  train projects/Poseur/configs/synthetic_poseur_topdown.yaml "$OUT/poseur_topdown_${ITERS}_per_coordinate" $(schedule "$ITERS") $authors
  # shellcheck disable=SC2086
  coarse_eval "$OUT/poseur_topdown_${ITERS}_per_coordinate" $authors
  # shellcheck disable=SC2046,SC2086
  train projects/Poseur/configs/synthetic_poseur_topdown.yaml "$OUT/poseur_topdown_${ITERS}_per_coordinate_noise02_instance" \
    $(schedule "$ITERS") $authors MODEL.POSEUR.NOISE_STD 0.2 MODEL.POSEUR.NOISE_SLOTS instance
  # shellcheck disable=SC2046,SC2086
  train projects/RLE/configs/synthetic_rle_topdown.yaml "$OUT/rle_integral_topdown_${ITERS}_per_coordinate" $(schedule "$ITERS") $authors
  # shellcheck disable=SC2046,SC2086
  train projects/RLE/configs/synthetic_rle_gap_topdown.yaml "$OUT/rle_gap_topdown_${ITERS}_per_coordinate" $(schedule "$ITERS") $authors
  # shellcheck disable=SC2046
  train projects/Poseur/configs/synthetic_poseur_topdown.yaml "$OUT/poseur_topdown_${ITERS}_offsets_finest" $(schedule "$ITERS") \
    MODEL.POSEUR.OFFSET_INIT finest
  coarse_eval "$OUT/poseur_topdown_${ITERS}_offsets_finest" MODEL.POSEUR.OFFSET_INIT finest
}

rcnn() {
  train configs/Baselines/synthetic_keypoint_rcnn_heatmap.yaml "$OUT/rcnn_heatmap_base"
  local base="$OUT/rcnn_heatmap_base/model_final.pth"
  # shellcheck disable=SC2046
  train configs/Baselines/synthetic_keypoint_rcnn_heatmap_finetune.yaml "$OUT/rcnn_heatmap_finetune" \
    MODEL.WEIGHTS "$base" $(schedule "$RCNN_ITERS")
  # shellcheck disable=SC2046
  train projects/RLE/configs/synthetic_rle_rcnn.yaml "$OUT/rcnn_rle_finetune" MODEL.WEIGHTS "$base" $(schedule "$RCNN_ITERS")
  # shellcheck disable=SC2046
  train projects/Poseur/configs/synthetic_poseur_rcnn.yaml "$OUT/rcnn_poseur_finetune" MODEL.WEIGHTS "$base" \
    $(schedule "$RCNN_ITERS")
}

logocap() {
  local lc="$OUT/logocap" rc="$OUT/rcnn_heatmap_equal_time_to_logocap"
  train projects/LOGOCAP/configs/synthetic_logocap.yaml "$lc"
  if [ ! -f "$rc/model_final.pth" ]; then
    local fit
    fit=$("$PY" tools/time_recipe.py --config-file configs/Baselines/synthetic_keypoint_rcnn_heatmap.yaml \
      --fit-log "$lc/log.txt" | tail -n 1)
    echo "[reproduce] Keypoint R-CNN schedule for LOGO-CAP's training time: $fit"
    # shellcheck disable=SC2086
    train configs/Baselines/synthetic_keypoint_rcnn_heatmap.yaml "$rc" $fit
  fi
  "$PY" projects/LOGOCAP/tools/logocap_upper_bound.py --config-file projects/LOGOCAP/configs/synthetic_logocap.yaml \
    --output "$lc/logocap_upper_bound.json" --overwrite MODEL.WEIGHTS "$lc/model_final.pth"
  "$PY" tools/compare_runs.py "$lc" "$rc" --names "LOGO-CAP (synthetic_logocap.yaml)" \
    "Keypoint R-CNN heatmap, from scratch, same training time"
}

case "${1:-}" in
  topdown) topdown ;;
  rcnn) rcnn ;;
  ablations) ablations ;;
  logocap) logocap ;;
  all) topdown; rcnn; ablations; logocap ;;
  *) echo "usage: $0 topdown|rcnn|ablations|logocap|all" >&2; exit 2 ;;
esac
