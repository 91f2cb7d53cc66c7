"""The data contract every layer shares: control names, cell statuses, the default seed.

Rows of the confusion matrix are adapters: one per user plus the controls; columns are the users
whose held-out text is scored (docs/methods.md). A user may never be named like a control.
Standard library only, so that `fixtures` (the bottom layer) can use it too.
"""

from __future__ import annotations

BASE = "base"  # the frozen model with no adapter
POOLED = "pooled"  # one adapter trained on every user's training text: the regularization control
CONTROLS: tuple[str, ...] = (BASE, POOLED)

# Leave-one-out controls: `loo:<user>` is one generic adapter trained on the union of every OTHER
# user's training text (same steps, batch and learning rate), the adapter a new user <user> would
# get. It is a control row, never a user adapter, so never an "other adapter" in the margins.
# User names cannot hold ':' (common.names), so the prefix cannot collide with a user.
LOO_PREFIX = "loo:"


def loo_name(user: str) -> str:
    """`loo:<user>`: the name of the leave-one-out control that never saw `user`'s text."""
    return f"{LOO_PREFIX}{user}"


def loo_user(name: str) -> str | None:
    """The user a `loo:<user>` control left out; None when `name` is not such a control."""
    return name[len(LOO_PREFIX):] if name.startswith(LOO_PREFIX) else None


def is_control(name: str) -> bool:
    """A control row (`base`, `pooled` or `loo:<user>`), as opposed to a user adapter."""
    return name in CONTROLS or name.startswith(LOO_PREFIX)

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
