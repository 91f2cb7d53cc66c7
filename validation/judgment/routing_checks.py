"""The routing rows' input checks before judging and the storage record (docs/routing.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common.contract import avg_users, ens_user, noise_parts
from validation.contract.prereg import Prereg, PreregError
from validation.inputs.structure import routing_rows
from validation.inputs.study import StudyData
from validation.inputs.tables import InputError
from validation.judgment.routing_results import NAMES, RUN_WITH_ROUTING, StorageBill

# ---- inputs -------------------------------------------------------------------------------------

def cells_file(data: StudyData) -> str:
    """The file a routing row of `data` came from, for messages: a run's cells.parquet, or the
    external cells file."""
    src = data.source
    if src is None:
        return "<cells>"
    return str(src / "cells.parquet") if Path(src).is_dir() or not Path(src).suffix else str(src)


def routing_names(data: StudyData) -> tuple[str, ...]:
    """The routing rows of `data`, sorted (the `avg:`, `ens:`, then `noise:` rows)."""
    cells = data.cells
    return tuple(sorted(set(cells.filter(routing_rows(cells))["adapter"].to_list())))


def check_sigmas(data: StudyData, prereg: Prereg, names: tuple[str, ...] | None = None) -> None:
    """Every `noise:<user>@<sigma>` row is at a pre-registered noise level (`[routing] sigmas`):
    InputError naming the file, the column and the value otherwise."""
    names = routing_names(data) if names is None else names
    for name in names:
        parts = noise_parts(name)
        if parts is not None and not any(parts[1] == s for s in prereg.sigmas):
            raise InputError(f"{cells_file(data)}: column `adapter` holds {name!r}, at noise level {parts[1]!r}, "
                             f"which `[routing] sigmas` {list(prereg.sigmas)} of {prereg.path or 'prereg.toml'} "
                             "does not pre-register; judge with the pre-registration the run was made with, or "
                             "drop that level's rows (docs/routing.md).")


def _needed_rows(name: str, prereg: Prereg, names: tuple[str, ...]) -> str | None:
    """Why criterion `name` cannot be read from these rows (None when it can)."""
    if name == "routing" and not any(ens_user(n) is not None for n in names):
        return "no `ens:<user>` rows"
    if name == "averaging" and not any(avg_users(n) is not None for n in names):
        return "no `avg:<a>+<b>` rows"
    if name == "noise":
        levels = {p[1] for n in names if (p := noise_parts(n)) is not None}
        if not levels:
            return "no `noise:<user>@<sigma>` rows"
        if prereg.noise_sigma not in levels:
            return (f"no `noise:<user>@<sigma>` rows at `noise_sigma` = {prereg.noise_sigma!r} "
                    f"(levels: {sorted(levels)})")
    return None


def check_routing(data: StudyData, prereg: Prereg) -> None:
    """Before judging: noise levels pre-registered (`check_sigmas`, InputError), and a gated
    routing criterion whose rows are absent refused (PreregError), as a gated population criterion
    with too few users is (`validation.contract.prereg.check_users`). Both exit 2 in the CLI."""
    names = routing_names(data)
    check_sigmas(data, prereg, names)
    for name in NAMES:
        why = _needed_rows(name, prereg, names)
        if prereg.gates_population(name) and why is not None:
            raise PreregError(
                f"{prereg.path or 'prereg'}: `[gate] {name}` gates on {name.upper()} but `{data.source}` has {why}; "
                f"{RUN_WITH_ROUTING}, or accept every status in `[gate] {name}` (the default) before the run.")


MAX_STORAGE_BYTES = 2**50   # 1 PiB for one user's adapter: larger is no adapter, and past 2**53 not a float


def storage_bill(manifest: Any, users: int, where: str = "manifest.json", *, rows: bool = False) -> StorageBill:
    """The manifest's `routing.storage` record {parameters, bytes_float32, bytes_float16} (a dict
    or a record with those attributes); a bill with no figures when the record is absent. A
    record present but malformed (not whole numbers, float16 larger than float32, fewer bytes than
    the parameters need) is an InputError naming the field, and so is a run's manifest without the
    record when the run holds routing rows (`rows`): the grid writes it with them."""
    record = getattr(manifest, "routing", None) if manifest is not None else None
    storage = _field(record, "storage")
    fix = "(the grid writes it; rerun `python -m runners.grid --routing` to rewrite it)."
    if storage is None:
        if rows and manifest is not None:
            raise InputError(f"{where}: the run holds routing rows but no `routing.storage` record {fix}")
        return StorageBill(users)
    values = {}
    for key in ("parameters", "bytes_float32", "bytes_float16"):
        v = _field(storage, key)
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_STORAGE_BYTES:
            raise InputError(f"{where}: field `routing.storage.{key}` must be a whole number in [0, 2**50]; "
                             f"got {v!r} {fix}")
        values[key] = v
    n, b32, b16 = values["parameters"], values["bytes_float32"], values["bytes_float16"]
    if n < 1 or b32 < 4 * n or b16 < 2 * n or b16 > b32:
        raise InputError(f"{where}: fields `routing.storage` do not describe one adapter: {n} parameters need at "
                         f"least {4 * n} bytes in float32 and {2 * n} in float16, and float16 is never larger than "
                         f"float32; got bytes_float32 = {b32}, bytes_float16 = {b16} {fix}")
    return StorageBill(users, **values)


def _field(record: Any, key: str) -> Any:
    if record is None:
        return None
    return record.get(key) if isinstance(record, dict) else getattr(record, key, None)


# ---- statistics ---------------------------------------------------------------------------------
