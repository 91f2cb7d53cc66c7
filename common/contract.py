"""The data contract every layer shares: control names, cell statuses, the default seed.

Rows of the confusion matrix are adapters: one per user plus the controls; columns are the users
whose held-out text is scored (docs/methods.md). A user may never be named like a control.
Standard library only, so that `fixtures` (the bottom layer) can use it too.
"""

from __future__ import annotations

BASE = "base"  # the frozen model with no adapter
POOLED = "pooled"  # one adapter trained on every user's training text: the regularization control
CONTROLS: tuple[str, ...] = (BASE, POOLED)

# Cell `status` values of cells.parquet / docs.parquet (docs/formats.md)
OK = "ok"
DIVERGED = "diverged"
WORSE_THAN_BASE = "worse_than_base"
STATUS_VALUES: dict[str, str] = {
    OK: "trained and evaluated normally",
    DIVERGED: "NaN/inf training loss or weights, or non-finite held-out NLL",
    WORSE_THAN_BASE: "adapter ends worse than the base on its own training text",
}

# The bootstrap's default seed (prereg.toml `rng_seed`, validation.calibrate `--rng-seed`)
DEFAULT_RNG_SEED = 20260101
