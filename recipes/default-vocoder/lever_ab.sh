#!/usr/bin/env bash
# One arm of a training-lever A/B on this recipe: the prior, the step draw, any `train` option.
#
#   [PRIOR=standard] bash recipes/default-vocoder/lever_ab.sh WORK_DIR RUN_NAME STEPS [TRAIN_ARGS...]
#
# Trains WORK_DIR/RUN_NAME for STEPS steps on train.sh's corpora with this folder's config.json and
# "prior": $PRIOR (default energy, the recipe's own; same seed, batch, crops and learning rate either
# way; checkpoints every 500), then scores each of its checkpoints on the held-out clips (fast
# schedule) into WORK_DIR/RUN_NAME.json. TRAIN_ARGS go to `diffwave-vocoder train`: `--init-from CKPT`
# fine-tunes a standard-prior checkpoint into the energy prior. The README's standard side was the
# recipe's own run (then standard) at the same steps. The step-draw A/B's arms were
# `--init-from EXPORT --low-noise-emphasis 0.5` and `--init-from EXPORT`.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 3 ] || { echo "usage: bash $0 WORK_DIR RUN_NAME STEPS [TRAIN_ARGS...], got $# arguments" >&2; exit 2; }
WORK=$1 NAME=$2 STEPS=$3
shift 3
[ -f "$WORK/heldout/metadata.csv" ] || { echo "error: run train.sh $WORK first (it makes the corpora)" >&2; exit 1; }
mkdir -p "$WORK/$NAME"
python - "$WORK/$NAME/config.json" "${PRIOR:-energy}" <<'PY'
import json, sys
config = json.load(open("recipes/default-vocoder/config.json"))
config["model"]["prior"] = sys.argv[2]
json.dump(config, open(sys.argv[1], "w"), indent=2)
PY
diffwave-vocoder train "$WORK/$NAME/run" "$WORK/train" --val "$WORK/val" --config "$WORK/$NAME/config.json" \
    --max-steps "$STEPS" "$@"
diffwave-vocoder evaluate --run "$WORK/$NAME/run" "$WORK/heldout/wavs" --baseline none --json "$WORK/$NAME.json"
