"""Names that the split, the training loop and a saved model's config share.

Kept apart and free of imports so that :mod:`._saved_config` can check a
``config.json`` without loading torch.
"""

from __future__ import annotations

__all__ = ["SPLIT_NAMES", "STOPPED_BY"]

#: The parts of a split, in the order of ``obs["autotune_split"]``'s categories.
SPLIT_NAMES = ("train", "validation", "heldout", "test")
#: Why a training run ended: every value ``TrainResult.stopped_by`` takes, the ones a saved config may hold.
STOPPED_BY = ("max_epochs", "early_stopping", "callback", "diverged")
