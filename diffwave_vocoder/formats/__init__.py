"""Other formats, above the vocoder: lmnt-com/diffwave checkpoints converted in, SavedModel and
TFLite exported out. Nothing below imports them."""
