"""Running a grid: what it needs before the first step (`prepare`), the units an executor runs
(`units`), the executors (`executors`: local or Ray) and the scheduling of seeds (`execute`)."""
