"""Perplexities out: the norm-only adapter grid (`python -m runners.grid`).

Modules: `model` (byte-level GPT whose LayerNorms take per-row adapters), `data` (bytes to
windows), `train` (batched adapter training, base pretraining), `evaluate` (held-out scoring),
`base_model` (pretrain once, cache, verify), `rundir` (run id, lock, tables, `latest`),
`settings` (flags -> validated GridSettings, the run's configuration), `routing` (the `--routing` rows
built from trained adapters, and the storage record), `execute` (prepare, train
and score each seed, resume, assemble the run), `provenance` (the manifest), `grid` (the CLI).
The learning-rate sweep behind the default `--lr` is `benchmarks/lr_sweep.py` (docs/lr_sweep.md).
Imports: `common`, `fixtures`, and of `validation` only its data contract (`validation.contract.prereg`,
`validation.contract.manifest`), checked by `lint-imports`.

Cell `status` values in cells.parquet / docs.parquet:
- `ok`: trained and evaluated normally;
- `diverged`: a NaN/inf training loss or adapter weight, or a non-finite held-out NLL;
- `worse_than_base`: the adapter ends with a higher mean NLL than the base model on a fixed
  sample of its own training text (32 windows, the same for every seed).
`base` cells are always `ok` unless their NLL is non-finite.
"""
