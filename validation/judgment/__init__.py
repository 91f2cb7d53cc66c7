"""The verdict: the pre-registered criteria, the decomposition, the population statistics, the step counts
(`steps`), and the typed `Verdict` they make (`results`). `study.judge` judges one study."""
