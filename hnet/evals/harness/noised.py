"""A multiple-choice task with one perturbation of `hnet.evals.perturbations` on its context, choices or both.

The noised-HellaSwag protocol of the BLT paper (AntSpeak, Drop, RandomCase, Repeat, UpperCase), applied
to any lm-eval multiple-choice task: the task YAML includes the clean task's keys and names this class
with `metadata: {perturbation, perturb_target, noise_seed}`. A document is noised with
`perturbations.item_seed(noise_seed, its clean context)`, the seed `eval.py mc` gives the same item,
so both score the same noised text; all choices of a document share that seed.
"""
from lm_eval.api.task import ConfigurableTask

from hnet.evals import perturbations
from hnet.evals.mc_items import TARGETS


class NoisedTask(ConfigurableTask):
  """`doc_to_text` and/or `doc_to_choice` of the clean task, perturbed."""

  def __init__(self, config: dict | None = None, **kwargs):
    config = {k: v for k, v in (config or {}).items() if k != "class"}
    meta = config.get("metadata") or {}
    self.perturbation = meta.get("perturbation")
    self.perturb_target = meta.get("perturb_target", "context")
    self.noise_seed = int(meta.get("noise_seed", 0))
    perturbations.perturb(self.perturbation or "?", "", 0)  # an unknown name fails here, with the known ones
    if self.perturb_target not in TARGETS:
      raise ValueError(f"{config.get('task')}: perturb_target must be one of {TARGETS}, got {self.perturb_target!r}")
    super().__init__(config=config, **kwargs)

  def _seed(self, doc) -> int:
    clean = super().doc_to_text(doc)
    return perturbations.item_seed(self.noise_seed, clean if isinstance(clean, str) else str(clean))

  def doc_to_text(self, doc, doc_to_text=None):
    text = super().doc_to_text(doc, doc_to_text)
    if self.perturb_target in ("context", "both") and isinstance(text, str):
      text = perturbations.perturb(self.perturbation, text, self._seed(doc))
    return text

  def doc_to_choice(self, doc, doc_to_choice=None):
    choices = super().doc_to_choice(doc, doc_to_choice)
    if self.perturb_target in ("continuation", "both"):
      seed = self._seed(doc)
      choices = [perturbations.perturb(self.perturbation, ch, seed) for ch in choices]
    return choices
