"""Analyses that never gate: the training-step interaction (`steps`) and the domain-similarity structure
(`similarity`)."""
