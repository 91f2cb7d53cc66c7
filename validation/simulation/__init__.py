"""Studies with a known truth: simulated cells and documents (`simulate`), and their parameters read off a
finished run (`from_run`)."""
