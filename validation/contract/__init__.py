"""What a run promises, checked before any statistic: the manifest, the pre-registration, the statuses.

Standard library (and `common`) only, so that the runner may import it (an import-linter contract holds it)."""
