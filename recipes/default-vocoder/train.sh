#!/usr/bin/env bash
# Retrain the vocoder that ships in the package (diffwave_vocoder/pretrained/default).
#
#   bash recipes/default-vocoder/train.sh [WORK_DIR [TRAIN_ARGS...]]   # default WORK_DIR: ~/diffwave-default-vocoder
#
# TRAIN_ARGS go to `diffwave-vocoder train`, e.g. `--init-from CKPT` to continue from an exported
# vocoder when the run directory was lost (weights kept, fresh optimizer; the export records the chain).
# The config uses PriorGrad's energy prior; the shipped model was trained with the standard prior first
# and fine-tuned into the energy prior with `--init-from` (its metadata's training_history has the chain).
#
# Makes the corpora with `diffwave-vocoder corpus`, then trains with this folder's config.json. The
# same command resumes an interrupted run (SIGTERM saves a checkpoint first). Training state and
# corpora stay in WORK_DIR, outside the repository; only the exported vocoder is committed.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${1:-$HOME/diffwave-default-vocoder}
shift || true
HERE=recipes/default-vocoder
mkdir -p "$WORK"

# Held out entirely (for evaluation): two voices never trained on, and texts from another seed.
HELD_OUT_VOICES="flite:awb,espeak-ng:en-us+m5"
TRAIN_VOICES="flite:slt,flite:rms,flite:kal16,espeak-ng:en-us,espeak-ng:en-us+f3,espeak-ng:en-gb+m3"
TRAIN_VOICES="$TRAIN_VOICES,espeak-ng:en-gb-x-rp+f2,espeak-ng:en-gb-scotland"
TRAIN_VOICES="$TRAIN_VOICES,festival:cmu_us_slt_arctic_hts,festival:kal_diphone,festival:ked_diphone"

[ -f "$WORK/train/metadata.csv" ] || diffwave-vocoder corpus "$WORK/train" --clips 1100 --seed 100 --voices "$TRAIN_VOICES"
# Validation: trained voices, texts never trained on. Held out: unseen voices and unseen texts.
[ -f "$WORK/val/metadata.csv" ] || diffwave-vocoder corpus "$WORK/val" --clips 22 --seed 101 \
    --voices "$TRAIN_VOICES" --exclude-texts-of "$WORK/train"
[ -f "$WORK/heldout/metadata.csv" ] || diffwave-vocoder corpus "$WORK/heldout" --clips 20 --seed 102 \
    --voices "$HELD_OUT_VOICES" --exclude-texts-of "$WORK/train"
[ -f "$WORK/.preprocessed" ] || { diffwave-vocoder preprocess "$WORK/train" && diffwave-vocoder preprocess "$WORK/val" \
    && touch "$WORK/.preprocessed"; }

diffwave-vocoder train "$WORK/run" "$WORK/train" --val "$WORK/val" --config "$HERE/config.json" "$@"
