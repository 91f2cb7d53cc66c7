"""Numbers only: metrics, the hierarchical bootstrap, intervals, REML and the mixed model, the Mantel test, and
the primitive result types they return. Never judges a criterion, never writes a file."""
