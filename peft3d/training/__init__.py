"""Training: one run (RunSpec -> result) and the step-time measurements of ``bench perf``."""
