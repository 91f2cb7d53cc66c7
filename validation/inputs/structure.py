"""The shape of a study's cells: users, their diagonal cells, the controls (`base`, `pooled`,
`loo:<user>`) and the routing rows (docs/formats.md, docs/routing.md)."""

from __future__ import annotations

import numpy as np
import polars as pl

from common.contract import (
    CONTROLS,
    LOO_PREFIX,
    ROUTING_PREFIXES,
    avg_name,
    avg_users,
    ens_user,
    is_control,
    is_routing_control,
    loo_name,
    loo_user,
    noise_name,
    noise_parts,
)
from validation.inputs.tables import InputError, row_numbers


def check_structure(cells: pl.DataFrame, src: str) -> None:
    """Users are the `eval` values; each needs its own adapter row; other rows must be controls."""
    users = sorted(set(cells["eval"].to_list()))
    adapters = set(cells["adapter"].to_list())
    if len(users) < 2:
        raise InputError(f"{src}: column `eval` names {len(users)} user(s) {users}; "
                         "the confusion matrix needs at least two users.")
    bad_eval = [u for u in users if is_control(u)]
    if bad_eval:
        raise InputError(f"{src}: column `eval` holds control name(s) {bad_eval}; controls are adapters only.")
    no_diag = [u for u in users if u not in adapters]
    if no_diag:
        raise InputError(f"{src}: user(s) {no_diag} in column `eval` have no diagonal cell "
                         "(no row with that `adapter`).")
    diag_rows = cells.filter(pl.col("adapter") == pl.col("eval"))
    no_diag = [u for u in users if u not in set(diag_rows["eval"].to_list())]
    if no_diag:
        raise InputError(f"{src}: user(s) {no_diag} have no diagonal cell (adapter == eval).")
    stray = sorted(a for a in adapters - set(users) - set(CONTROLS)
                   if loo_user(a) is None and not is_routing_control(a))
    if stray:
        raise InputError(f"{src}: column `adapter` holds {stray}, which are neither users "
                         f"(values of `eval`) nor controls {list(CONTROLS)}, `{LOO_PREFIX}<user>` or the routing "
                         "rows `avg:<a>+<b>`, `ens:<user>`, `noise:<user>@<sigma>` (docs/routing.md).")
    check_loo_controls(cells, src, users)
    check_routing_controls(cells, src, users)


def routing_rows(df: pl.DataFrame) -> pl.Series:
    """Per row of a cells or docs table: is its adapter a routing control (`avg:`, `ens:`, `noise:`;
    docs/routing.md)? Those rows are judged by `validation.judgment.routing` only: every other figure of the
    verdict is computed without them (`drop_routing`)."""
    names = df["adapter"].cast(pl.Utf8)
    mask = names.str.starts_with(ROUTING_PREFIXES[0])
    for prefix in ROUTING_PREFIXES[1:]:
        mask = mask | names.str.starts_with(prefix)
    return mask.fill_null(False)


def drop_routing(df: pl.DataFrame | None) -> pl.DataFrame | None:
    """`df` without its routing-control rows (`routing_rows`); None stays None."""
    if df is None or not df.height:
        return df
    mask = routing_rows(df)
    return df.filter(~mask) if mask.any() else df


def _routing_problem(name: str, users: set[str]) -> str | None:
    """Why routing row `name` is not one this study can hold (None when it is): it must name users of
    the study, in the one spelling the grid writes (`common.contract`)."""
    pair = avg_users(name)
    if name.startswith(ROUTING_PREFIXES[0]):
        if pair is None:
            return "is not `avg:<a>+<b>` with two user names"
        unknown = [u for u in pair if u not in users]
        if unknown:
            return f"averages user(s) {unknown}, who are not in the study"
        if pair[0] == pair[1]:
            return "averages a user with itself; an average needs two different users"
        if avg_name(*pair) != name:
            return f"names its users out of order; the grid writes {avg_name(*pair)!r} (users in name order)"
        return None
    if name.startswith(ROUTING_PREFIXES[1]):
        user = ens_user(name)
        return None if user in users else f"is the ensemble left without user {user!r}, who is not in the study"
    parts = noise_parts(name)
    if parts is None:
        return "is not `noise:<user>@<sigma>` with a user name and a number"
    user, sigma = parts
    if user not in users:
        return f"perturbs the adapter of user {user!r}, who is not in the study"
    if not (sigma > 0 and sigma == sigma and sigma != float("inf")):
        return f"has noise level {sigma!r}; a relative noise level is a number > 0"
    if noise_name(user, sigma) != name:
        return f"writes its noise level unlike the grid; name it {noise_name(user, sigma)!r}"
    return None


def check_routing_controls(cells: pl.DataFrame, src: str, users: list[str]) -> None:
    """Routing controls (docs/routing.md) name users of the study; `ens:<user>` exists for every user
    or none, and `noise:<user>@<sigma>` for every user at the same noise levels. Whether a noise level
    was pre-registered is checked by the verdict, which knows `[routing] sigmas` (`validation.judgment.routing`)."""
    names = [a for a in cells["adapter"].unique(maintain_order=True).to_list() if is_routing_control(a)]
    if not names:
        return
    known = set(users)
    col = cells["adapter"]
    for name in names:
        why = _routing_problem(name, known)
        if why is not None:
            raise InputError(f"{src}: column `adapter` holds {name!r} at row(s) {row_numbers(col == name)}, which "
                             f"{why} (the users are the values of `eval`: {users}); fix the name or drop its rows "
                             "(docs/routing.md).")
    ens = {ens_user(n) for n in names if ens_user(n) is not None}
    if ens and ens != known:
        lacking = sorted(known - ens)
        raise InputError(f"{src}: column `adapter` holds ensemble rows `ens:<user>` but user(s) {lacking} have none; "
                         "the grid scores the ensemble of every user: give every user its `ens:<user>` rows or drop "
                         "them all (docs/routing.md).")
    check_routing_coverage(cells, src, names)
    noise: dict[str, set[float]] = {}
    for n in names:
        if (parts := noise_parts(n)) is not None and n.startswith(ROUTING_PREFIXES[2]):
            noise.setdefault(parts[0], set()).add(parts[1])
    if noise:
        levels = set().union(*noise.values())
        lacking = sorted(f"{noise_name(u, s)}" for u in users for s in sorted(levels) if s not in noise.get(u, ()))
        if lacking:
            raise InputError(f"{src}: column `adapter` holds noise rows at level(s) {sorted(levels)} but not for "
                             f"every user, e.g. {lacking[:3]} is missing: give every user the same noise levels or "
                             "drop the noise rows (docs/routing.md).")


def check_routing_coverage(cells: pl.DataFrame, src: str, names: list[str]) -> None:
    """Every routing row is scored on every (seed, user's text) the users' own rows are: the grid
    scores them all, and rows kept for some seeds only would pick the seeds a figure is read on
    (an interval from one seed carries no seed-to-seed variation)."""
    key = [c for c in ("seed", "steps", "eval") if c in cells.columns]
    users = set(cells["eval"].to_list())
    want = cells.filter(pl.col("adapter").is_in(list(users))).select(key).unique()
    for name in names:
        have = cells.filter(pl.col("adapter") == name).select(key).unique()
        lacking = want.join(have, on=key, how="anti")
        if lacking.height:
            first = lacking.sort(key).row(0, named=True)
            example = ", ".join(f"{k}={v!r}" for k, v in first.items())
            raise InputError(f"{src}: the routing row {name!r} is not scored on every seed and user the users' own "
                             f"rows are ({lacking.height} missing, e.g. {example}): "
                             "give it every seed's rows, as the grid writes them, or drop that row (docs/routing.md).")


def check_loo_controls(cells: pl.DataFrame, src: str, users: list[str]) -> None:
    """Leave-one-out controls `loo:<user>` name a user of the study, and exist for every user or none.

    Rows are 1-based positions in `cells` (the file's data rows, header not counted).
    """
    names = cells["adapter"]
    left_out = pl.select(pl.when(names.str.starts_with(LOO_PREFIX))
                         .then(names.str.slice(len(LOO_PREFIX)))).to_series()  # null: not a loo control
    is_loo = left_out.is_not_null()
    if not is_loo.any():
        return
    unknown = is_loo & ~left_out.is_in(users)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(f"{src}: row {row + 1}: adapter {names[row]!r} is the leave-one-out control of user "
                         f"{left_out[row]!r}, who is not in the study (the users are the values of `eval`: "
                         f"{users}); name it `{LOO_PREFIX}<user>` after one of them, or drop its rows.")
    have = set(left_out.filter(is_loo).to_list())
    lacking = [u for u in users if u not in have]
    if lacking:
        row = int(np.flatnonzero(is_loo.to_numpy())[0])
        raise InputError(f"{src}: row {row + 1}: adapter {names[row]!r} is a leave-one-out control, but user(s) "
                         f"{lacking} have none ({', '.join(repr(loo_name(u)) for u in lacking)}): give every "
                         f"user its `{LOO_PREFIX}<user>` rows or drop them all (docs/formats.md).")
