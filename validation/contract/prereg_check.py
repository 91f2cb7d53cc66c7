"""The pre-registration held against the run it judges (docs/gate.md): the file's hash against the
manifest's (`check_prereg`), the settings a locked file leaves out read as the run recorded them
(`with_recorded_settings`), and the command-line overrides that make a verdict NOT PRE-REGISTERED
(`command_line_overrides`, `with_overrides`, `with_unregistered`). Standard library only, like
`validation.contract.prereg`."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from validation.contract.manifest import Manifest
from validation.contract.prereg import (
    PREREG_FILENAME,
    Prereg,
    PreregError,
    setting_key,
)
from validation.contract.status import PreregStatus


def check_prereg(prereg: Prereg, manifest: Manifest | None, *, allow_change: bool) -> PreregStatus:
    """Compare the file's hash with the run manifest's `prereg.sha256`.

    Raises PreregError when the hashes differ and `allow_change` is False. Without a manifest (or
    without a recorded hash) the criteria cannot be shown to precede the data: NOT PRE-REGISTERED.
    """
    expected = None if manifest is None else manifest.prereg.sha256
    if expected is None:
        note = "no run manifest"
        return PreregStatus(False, prereg.sha256, None, prereg.path,
                            f"{note}: the criteria cannot be shown to precede the data")
    if expected == prereg.sha256:
        return PreregStatus(True, prereg.sha256, expected, prereg.path, "matches the run manifest")
    if not allow_change:
        raise PreregError(
            f"{prereg.path}: pre-registration changed since the run (sha256 {prereg.sha256[:12]}... "
            f"!= manifest {str(expected)[:12]}...). Restore the file, or pass "
            "`--allow-prereg-change` to judge anyway (the outputs will say NOT PRE-REGISTERED, "
            "and the gate fails unless `--accept-not-preregistered`)."
        )
    return PreregStatus(False, prereg.sha256, expected, prereg.path,
                        "changed since the run; judged with --allow-prereg-change")


# Settings whose default changed before runs recorded their settings (`prereg.json`, from
# 2026-11-28), with the earlier defaults (oldest first): a run of that time has no record, so these
# only name, in a warning, what an omitted setting may have meant.
CHANGED_DEFAULTS: dict[str, tuple[str, ...]] = {
    "interval_method": ("percentile", "student-t", "cochran-cox"),
    "lenient_adjust": ("none",),
}


# Defaults changed since runs record their settings: the only values a record may restore for a
# setting its file leaves out (besides today's default). Whoever changes a default in `Prereg` adds
# the old value here. Empty: no default has changed since the record began, so today every record
# of an omitted setting must hold today's default, and an edited record cannot loosen anything.
RECORDED_FORMER_DEFAULTS: dict[str, tuple[Any, ...]] = {}


def with_recorded_settings(prereg: Prereg, manifest: Manifest | None) -> tuple[Prereg, tuple[str, ...]]:
    """The settings a locked file leaves out, read as they were when its run started.

    The runner records every resolved setting when the run starts (`prereg.json`, copied into the
    manifest's `prereg.settings`). When the file's hash matches the manifest's, a setting the file
    does not state takes the recorded value, so a default changed in a later version of this suite
    cannot change what a locked file means; each such change is returned as a warning. The record
    can only restore a former default, never loosen anything: a recorded value for an omitted
    setting must be today's default or one listed in `RECORDED_FORMER_DEFAULTS`, a recorded value for a
    stated setting must equal the file's, and an unknown setting is refused (PreregError, exit 2:
    the manifest was not written for this file). A manifest without the record (written before it
    existed) leaves today's defaults in place, with a warning for each omitted setting whose
    default has changed. A file that does not match the manifest is returned unchanged.
    """
    if manifest is None or manifest.prereg.sha256 != prereg.sha256:
        return prereg, ()
    where = prereg.path or PREREG_FILENAME
    names = [f.name for f in fields(Prereg) if f.compare]
    omitted = [n for n in names if n not in prereg.explicit]
    recorded = manifest.prereg.settings
    if recorded is None:
        return prereg, tuple(
            f"{where} does not set `{setting_key(name)}` and the run's manifest does not record the value it "
            f"had when the run started: judged with this version's default {getattr(prereg, name)!r}; earlier "
            f"versions defaulted to {' then '.join(map(repr, CHANGED_DEFAULTS[name]))}. State it in the file "
            "before the next run." for name in omitted if name in CHANGED_DEFAULTS)
    fix = "restore the manifest.json the run wrote (or judge with `--allow-prereg-change`, NOT PRE-REGISTERED)."
    unknown = sorted(set(recorded) - set(names))
    if unknown:
        raise PreregError(f"the run's manifest.json `prereg.settings` holds unknown setting(s) {unknown}: it was not "
                          f"written by this version of the suite for {where}; {fix}")
    changes = {}
    for name in names:
        if name not in recorded:
            continue   # a setting newer than the run: its default keeps the meaning of before
        value = tuple(recorded[name]) if isinstance(recorded[name], list) else recorded[name]
        current = getattr(prereg, name)
        if name in prereg.explicit:
            if value != current:
                raise PreregError(f"the run's manifest.json `prereg.settings` records `{setting_key(name)}` = "
                                  f"{recorded[name]!r}, but {where} states {current!r}: the record was not written "
                                  f"for this file; {fix}")
            continue
        allowed = (current, *RECORDED_FORMER_DEFAULTS.get(name, ()))
        if value not in allowed:
            raise PreregError(f"the run's manifest.json `prereg.settings` records `{setting_key(name)}` = "
                              f"{recorded[name]!r}, which {where} leaves out and which was never this suite's "
                              f"default ({', '.join(map(repr, allowed))}): a record can only restore a former "
                              f"default; {fix}")
        if value != current:
            changes[name] = value
    if not changes:
        return prereg, ()
    try:
        resolved = replace(prereg, **changes)
    except PreregError as e:
        raise PreregError(f"the run's manifest.json `prereg.settings`: {e} {fix}") from None
    return resolved, tuple(
        f"{where} does not set `{setting_key(name)}`: judged with {value!r}, its value when the run started "
        f"(recorded in the manifest), not this version's default {getattr(prereg, name)!r}"
        for name, value in changes.items())


# The command-line flags of `python -m validation.verdict` that can change a status, with the
# pre-registered setting each one replaces (docs/gate.md).
OVERRIDABLE = {"--n-resamples": "n_resamples", "--rng-seed": "rng_seed"}


def command_line_overrides(prereg: Prereg, values: dict[str, Any]) -> tuple[str, ...]:
    """Flags (keys of OVERRIDABLE) given with a value other than the pre-registered one.

    A flag given with the pre-registered value is not an override.
    """
    out = []
    for flag, value in values.items():
        setting = OVERRIDABLE[flag]
        if value is not None and value != getattr(prereg, setting):
            out.append(f"{flag} {value} (pre-registered {setting} = {getattr(prereg, setting)})")
    return tuple(out)


def with_unregistered(status: PreregStatus, why: str | None) -> PreregStatus:
    """The status once the run is found to differ from what the file pre-registers (`why`, e.g. a
    step count other than `[steps] primary`): NOT PRE-REGISTERED, with the reason in its note."""
    if why is None:
        return status
    return replace(status, locked=False, note=f"{status.note}; {why}" if not status.locked else why)


def with_overrides(status: PreregStatus, overrides: tuple[str, ...], *, accepted: bool) -> PreregStatus:
    """The status once command-line overrides are applied: any override makes it NOT PRE-REGISTERED."""
    if not overrides:
        return replace(status, accepted=accepted and not status.locked)
    note = "command-line override of a pre-registered setting: " + "; ".join(overrides)
    if not status.locked:
        note = f"{status.note}; {note}"
    return replace(status, locked=False, note=note, overrides=overrides, accepted=accepted)


@dataclass(frozen=True)
class Settings:
    """The settings a verdict is computed with: the pre-registration plus the command-line flags that
    replace one of its settings (`OVERRIDABLE`: `--n-resamples`, `--rng-seed`; docs/gate.md).

    `prereg` keeps the pre-registered values (verdict.json `settings`); `n_resamples` and `rng_seed`
    are the values used; a flag left out (None) keeps the pre-registered one. One object for every
    function that judges, so the overrides are not threaded through each one separately."""

    prereg: Prereg
    n_resamples_flag: int | None = None
    rng_seed_flag: int | None = None

    @property
    def n_resamples(self) -> int:
        return self.prereg.n_resamples if self.n_resamples_flag is None else self.n_resamples_flag

    @property
    def rng_seed(self) -> int:
        return self.prereg.rng_seed if self.rng_seed_flag is None else self.rng_seed_flag

    @property
    def n_resamples_source(self) -> str:
        """Where `n_resamples` comes from, as a message names it: the flag or the setting."""
        return "--n-resamples" if self.n_resamples_flag is not None else "n_resamples"

    def overrides(self) -> tuple[str, ...]:
        """The flags given with a value other than the pre-registered one (`command_line_overrides`)."""
        return command_line_overrides(self.prereg, {"--n-resamples": self.n_resamples_flag,
                                                    "--rng-seed": self.rng_seed_flag})
