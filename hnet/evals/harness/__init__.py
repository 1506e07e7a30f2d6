"""lm-evaluation-harness integration: the `hnet` model, noised multiple-choice tasks, local datasets.

  pip install -e ".[lmeval]"
  hnet-lm-eval --model hnet --model_args workdir=runs/default --tasks hellaswag_local hellaswag_local_noised \
      --hellaswag_file hellaswag_val.jsonl

Modules: `model` (the LM, registered as "hnet"), `noised` (a task with a perturbation on its context,
its choices or both), `datasets` (offline loaders for task YAMLs), `tasks` (writes the task YAMLs in
`tasks/` from one definition), `__main__` (lm-eval's command line with all of these in place).
Importing this package imports nothing from lm-eval: only its modules do.
"""
import os

TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")
