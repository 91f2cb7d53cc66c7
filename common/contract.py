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


# Routing controls (issue #25), built from the trained user adapters without retraining:
# - `avg:<a>+<b>`: the element-wise parameter average of users a's and b's adapters (a < b by name);
# - `ens:<user>`: the unknown-user ensemble, the mean of the predicted token PROBABILITIES of every
#   user adapter except `<user>`'s (a mixture of distributions, not of logits or parameters);
# - `noise:<user>@<sigma>`: `<user>`'s adapter with relative Gaussian noise on every parameter,
#   theta * (1 + sigma * eps), eps ~ N(0, 1) per element; the row's NLL is the mean over the
#   pre-registered number of noise draws per seed.
# Like `loo:`, they are control rows, never "other adapters" in a margin.
AVG_PREFIX = "avg:"
ENS_PREFIX = "ens:"
NOISE_PREFIX = "noise:"
ROUTING_PREFIXES: tuple[str, ...] = (AVG_PREFIX, ENS_PREFIX, NOISE_PREFIX)


def avg_name(a: str, b: str) -> str:
    """`avg:<a>+<b>` with the two users in name order (the average is symmetric)."""
    if a == b:
        raise ValueError(f"an average needs two different users, got {a!r} twice")
    lo, hi = sorted((a, b))
    return f"{AVG_PREFIX}{lo}+{hi}"


def avg_users(name: str) -> tuple[str, str] | None:
    """The two users of an `avg:<a>+<b>` row; None when `name` is not one."""
    if not name.startswith(AVG_PREFIX):
        return None
    a, sep, b = name[len(AVG_PREFIX):].partition("+")  # '+' is never in a user name (common.names)
    return (a, b) if sep and a and b else None


def ens_name(user: str) -> str:
    """`ens:<user>`: the ensemble of every user adapter except `user`'s."""
    return f"{ENS_PREFIX}{user}"


def ens_user(name: str) -> str | None:
    """The user an `ens:<user>` row left out; None when `name` is not one."""
    return name[len(ENS_PREFIX):] if name.startswith(ENS_PREFIX) else None


def noise_name(user: str, sigma: float) -> str:
    """`noise:<user>@<sigma>`, sigma written by `repr` of the float (0.1 -> `0.1`)."""
    return f"{NOISE_PREFIX}{user}@{float(sigma)!r}"


def noise_parts(name: str) -> tuple[str, float] | None:
    """(user, sigma) of a `noise:<user>@<sigma>` row; None when `name` is not one."""
    if not name.startswith(NOISE_PREFIX):
        return None
    user, sep, sigma = name[len(NOISE_PREFIX):].rpartition("@")
    try:
        return (user, float(sigma)) if sep and user else None
    except ValueError:
        return None


def is_routing_control(name: str) -> bool:
    """An `avg:`, `ens:` or `noise:` row."""
    return name.startswith(ROUTING_PREFIXES)


def is_control(name: str) -> bool:
    """A control row (`base`, `pooled`, `loo:<user>` or a routing row), as opposed to a user adapter."""
    return name in CONTROLS or name.startswith(LOO_PREFIX) or is_routing_control(name)

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
