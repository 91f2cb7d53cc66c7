"""The validator validated: coverage and false-PASS tables of the criteria (`plan`, `run`, `results`,
`study`), and of the population, step-count and figure readings (`population`, `steps`, `figures`, `theory`)."""
