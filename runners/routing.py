"""The routing rows (issue #25, docs/routing.md): `avg:<a>+<b>`, `ens:<user>`, `noise:<user>@<sigma>`.

Built from a seed's trained user adapters at a step count, without retraining, and scored on every
user's held-out text like every other row (`runners.execution.execute`):

- `avg:<a>+<b>`: the element-wise average of the two users' adapter parameters (`average_state`),
  for every pair up to `[routing] max_pairs`, else a random sample of that many pairs drawn with
  `rng_seed` (`choose_pairs`);
- `ens:<user>`: at every token, the mean of the PROBABILITIES every other user's adapter gives the
  target (`ensemble_nll`), derived from the per-token NLLs the user rows' scoring computes anyway
  (no extra forward pass);
- `noise:<user>@<sigma>`: the user's adapter times 1 + sigma * eps, eps ~ N(0, 1) per element from a
  generator seeded by (seed, user, sigma, draw) (`noisy_state`); the row's per-document NLL is the
  mean over `noise_draws` draws.

Plus the storage record of one user's adapter (`storage_record`). Pure functions of their inputs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import save as safetensors_bytes

from common.contract import DIVERGED, OK, avg_name, ens_name, noise_name
from common.hashing import sha256_json

# What the manifest's `routing.noise` says a `noise:` row is (docs/routing.md)
NOISE_DEFINITION = ("theta * (1 + sigma * eps), eps ~ N(0, 1) independently per element of every adapter parameter "
                    "(relative noise around the adapter's own values); torch.Generator seeded per (seed, user, "
                    "sigma, draw) (runners.routing.noise_seed), the same draws at every step count; the row's "
                    "per-document nll_sum is the mean over the draws' nll_sum")


@dataclass(frozen=True)
class RoutingConfig:
    """The `[routing]` settings the rows are built with (validation.contract.prereg.Prereg), and the pair seed."""

    sigmas: tuple[float, ...] = (0.01, 0.1, 0.3)
    noise_draws: int = 3
    max_pairs: int = 45
    rng_seed: int = 20260101

    @classmethod
    def from_prereg(cls, p) -> RoutingConfig:
        return cls(sigmas=tuple(float(x) for x in p.sigmas), noise_draws=int(p.noise_draws),
                   max_pairs=int(p.max_pairs), rng_seed=int(p.rng_seed))

    def to_dict(self) -> dict:
        return {"sigmas": list(self.sigmas), "noise_draws": self.noise_draws, "max_pairs": self.max_pairs,
                "rng_seed": self.rng_seed}


def choose_pairs(users: Sequence[str], max_pairs: int, rng_seed: int) -> tuple[tuple[tuple[str, str], ...], bool]:
    """The `avg:` pairs, each in name order, and whether they are a sample: every pair (in the
    users' order) when there are at most `max_pairs`, else `max_pairs` of them drawn without
    replacement by numpy's default_rng(`rng_seed`), kept in the order of the full list."""
    every = [tuple(sorted(p)) for p in itertools.combinations(users, 2)]
    if len(every) <= max_pairs:
        return tuple(every), False
    picked = np.sort(np.random.default_rng(rng_seed).choice(len(every), size=max_pairs, replace=False))
    return tuple(every[i] for i in picked), True


@dataclass(frozen=True)
class RoutingPlan:
    """The rows one run builds: the same for every seed and step count."""

    users: tuple[str, ...]  # the user adapters, in bank order (the first entries of `Prepared.names`)
    pairs: tuple[tuple[str, str], ...]
    sampled: bool  # `pairs` is a random sample of every pair
    config: RoutingConfig

    @property
    def avg_names(self) -> tuple[str, ...]:
        return tuple(avg_name(a, b) for a, b in self.pairs)

    @property
    def ens_names(self) -> tuple[str, ...]:
        return tuple(ens_name(u) for u in self.users)

    @property
    def noise_names(self) -> tuple[str, ...]:
        return tuple(noise_name(u, s) for u in self.users for s in self.config.sigmas)

    @property
    def built_names(self) -> tuple[str, ...]:
        """The rows that are scored as adapters of their own (`avg:` then `noise:`); `ens:` rows are derived."""
        return self.avg_names + self.noise_names

    @property
    def names(self) -> tuple[str, ...]:
        """Every routing row, in the order they follow the trained adapters: avg, ens, noise."""
        return self.avg_names + self.ens_names + self.noise_names

    def sources(self, name: str) -> tuple[str, ...]:
        """The user adapters row `name` is built from."""
        for (a, b), n in zip(self.pairs, self.avg_names, strict=True):
            if n == name:
                return (a, b)
        for u in self.users:
            if name == ens_name(u):
                return tuple(v for v in self.users if v != u)
            if name in {noise_name(u, s) for s in self.config.sigmas}:
                return (u,)
        raise KeyError(name)

    def status(self, name: str, statuses: dict[str, str]) -> str:
        """A row is `diverged` when any adapter it is built from diverged, else `ok`: the worse-than-base
        health check is a training check, carried by the contributors' own rows."""
        return DIVERGED if any(statuses[u] == DIVERGED for u in self.sources(name)) else OK

    def to_json(self) -> dict:
        """The manifest's `routing` record, without storage and timings."""
        return {**self.config.to_dict(), "pairs": [list(p) for p in self.pairs],
                "pair_selection": "random sample" if self.sampled else "every pair",
                "noise": NOISE_DEFINITION, "rows": list(self.names)}


def plan_routing(users: Sequence[str], config: RoutingConfig) -> RoutingPlan:
    if len(users) < 2:
        raise ValueError("the routing rows need at least two users")
    pairs, sampled = choose_pairs(users, config.max_pairs, config.rng_seed)
    return RoutingPlan(tuple(users), pairs, sampled, config)


def average_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The element-wise average of two adapters' parameters (every trainable norm gain and bias)."""
    if a.keys() != b.keys():
        raise ValueError(f"adapters with different parameters: {sorted(a.keys() ^ b.keys())}")
    return {k: (a[k] + b[k]) / 2 for k in a}


def noise_seed(seed: int, user: str, sigma: float, draw: int) -> int:
    """The generator seed of one noise draw: a 63-bit digest of (seed, user, sigma, draw)."""
    return int(sha256_json(["noise", int(seed), user, float(sigma).hex(), int(draw)], 16), 16) >> 1


def noisy_state(state: dict[str, torch.Tensor], sigma: float, generator_seed: int) -> dict[str, torch.Tensor]:
    """`state` with every element multiplied by 1 + sigma * eps, eps ~ N(0, 1) (float32, drawn on the
    CPU by a torch.Generator seeded with `generator_seed`, parameter by parameter in name order, so
    the same whether the state comes from training or from its adapter file)."""
    g = torch.Generator().manual_seed(generator_seed)
    out = {}
    for k in sorted(state):
        v = state[k]
        eps = torch.randn(v.shape, generator=g, dtype=torch.float32).to(device=v.device, dtype=v.dtype)
        out[k] = v * (1 + sigma * eps)
    return {k: out[k] for k in state}


def built_bank(plan: RoutingPlan, seed: int, user_states: dict[str, dict[str, torch.Tensor]],
               rows: Sequence[str]) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """The adapters to score for `rows` (of `plan.built_names`), as (row, state): one per `avg:` row,
    `noise_draws` per `noise:` row (their per-document NLLs are averaged by the caller)."""
    by_avg = dict(zip(plan.avg_names, plan.pairs, strict=True))
    by_noise = {noise_name(u, s): (u, s) for u in plan.users for s in plan.config.sigmas}
    out = []
    for row in rows:
        if row in by_avg:
            a, b = by_avg[row]
            out.append((row, average_state(user_states[a], user_states[b])))
        else:
            u, s = by_noise[row]
            out += [(row, noisy_state(user_states[u], s, noise_seed(seed, u, s, d)))
                    for d in range(plan.config.noise_draws)]
    return out


def ensemble_nll(token_nlls: Sequence[torch.Tensor]) -> torch.Tensor:
    """(W, T) float64 NLL of the mixture that averages the adapters' predicted probabilities of
    each target: -(logsumexp_a(-nll_a) - log n), from each adapter's (W, T) target NLLs. Padding
    positions (NLL 0 for every adapter) stay 0."""
    if not token_nlls:
        raise ValueError("an ensemble needs at least one adapter")
    logp = -torch.stack([t.double() for t in token_nlls])  # (n, W, T)
    return -(torch.logsumexp(logp, dim=0) - math.log(len(token_nlls)))


def storage_record(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """One adapter's parameter count and the bytes of its safetensors serialization (no metadata)
    in float32 and in float16: the manifest's `routing.storage`."""
    def size(dtype: torch.dtype) -> int:
        return len(safetensors_bytes({k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items()}))

    return {"parameters": int(sum(v.numel() for v in state.values())), "bytes_float32": size(torch.float32),
            "bytes_float16": size(torch.float16)}
