"""Training: the step and the loop (`trainer`), optimizer, checkpoints, restoring runs, eval totals, metric
writing, ahead-of-time compiles and accelerator targets, one-line errors for the entry points."""
