"""The task YAMLs in `tasks/`, written from one definition: `python -m hnet.evals.harness.tasks`.

Families (each a clean task plus noised variants):
  hellaswag        lm-eval's HellaSwag from the hub (its preprocessing, `lm_eval.tasks.hellaswag.utils`)
  hellaswag_local  the same task from a released-format jsonl (`--metadata '{"hellaswag_file": ...}'`)
  hnet_corpus_mc   items cut from held-out documents of the embedded corpus (`corpus_mc_file`)
Noised variants: `<family>_<perturbation>` noises the context (the papers' protocol), `_choices` the
choices, `_both` both; every perturbation of `hnet.evals.perturbations`. Group `<family>_noised`
averages the five paper perturbations on the context. The clean `hellaswag` is lm-eval's own task.
"""
import os

from hnet.evals import perturbations
from hnet.evals.harness import TASKS_DIR

_HELLASWAG = {
    "output_type": "multiple_choice",
    "process_docs": "!function lm_eval.tasks.hellaswag.utils.process_docs",
    "doc_to_text": '"{{query}}"',
    "doc_to_target": '"{{label}}"',
    "doc_to_choice": '"choices"',
}
FAMILIES = {
    "hellaswag": {"dataset_path": "Rowan/hellaswag", "dataset_name": "null", "training_split": "train",
                  "validation_split": "validation", "test_split": "null", **_HELLASWAG},
    "hellaswag_local": {"custom_dataset": "!function hnet.evals.harness.local_data.hellaswag_file",
                        "dataset_path": "json", "validation_split": "validation", "test_split": "null",
                        **_HELLASWAG},
    "hnet_corpus_mc": {"custom_dataset": "!function hnet.evals.harness.local_data.corpus_mc_file",
                       "dataset_path": "json", "validation_split": "validation", "test_split": "null",
                       "output_type": "multiple_choice", "doc_to_text": '"{{context}}"',
                       "doc_to_target": '"{{label}}"', "doc_to_choice": '"choices"',
                       "target_delimiter": '""'},  # the choices carry their own leading space
}
METRICS = ("acc", "acc_norm", "acc_bytes")
SUFFIX = {"context": "", "continuation": "_choices", "both": "_both"}
HEADER = "# Written by `python -m hnet.evals.harness.tasks` (hnet/evals/harness/tasks.py): edit that, not this file.\n"


def _yaml(task: str, body: dict, metadata: dict) -> str:
  lines = [HEADER.rstrip(), f"task: {task}"] + [f"{k}: {v}" for k, v in body.items()]
  lines.append("metric_list:")
  for m in METRICS:
    lines += [f"  - metric: {m}", "    aggregation: mean", "    higher_is_better: true"]
  lines.append("metadata:")
  lines += [f"  {k}: {v}" for k, v in {"version": 1.0, **metadata}.items()]
  return "\n".join(lines) + "\n"


def task_files() -> dict[str, str]:
  """file name -> YAML text of every task and group."""
  files = {}
  for family, body in FAMILIES.items():
    if family != "hellaswag":  # lm-eval ships the clean hub task itself
      files[f"{family}.yaml"] = _yaml(family, body, {})
    for name in perturbations.PERTURBATIONS:
      for target, suffix in SUFFIX.items():
        task = f"{family}_{name}{suffix}"
        noised = {**body, "class": "!function hnet.evals.harness.noised.NoisedTask"}
        files[f"{task}.yaml"] = _yaml(task, noised, {"perturbation": name, "perturb_target": target,
                                                     "noise_seed": 0})
    members = "\n".join(f"  - {family}_{p}" for p in perturbations.PAPER_PERTURBATIONS)
    aggregate = "\n".join(f"  - metric: {m}\n    weight_by_size: false" for m in METRICS)
    files[f"{family}_noised.yaml"] = (f"{HEADER}group: {family}_noised\ntask:\n{members}\n"
                                      f"aggregate_metric_list:\n{aggregate}\nmetadata:\n  version: 1.0\n")
  return files


def write(directory: str = TASKS_DIR) -> list[str]:
  """Writes every task YAML into `directory` (replacing earlier ones); returns the paths."""
  os.makedirs(directory, exist_ok=True)
  for old in os.listdir(directory):
    if old.endswith(".yaml"):
      os.remove(os.path.join(directory, old))
  paths = []
  for name, text in sorted(task_files().items()):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    paths.append(path)
  return paths


if __name__ == "__main__":
  print(f"wrote {len(write())} task files to {TASKS_DIR}")
