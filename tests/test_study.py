"""experiments/study.py: every run sized to the same training FLOPs per byte; the :tiny study end to end."""
import json
import os
import shutil

import pytest

from experiments import study
from hnet.config import model_config_from_dict
from hnet.model.flops import flops_per_byte
from tests.helpers import entropy_lm_workdir


def test_every_run_of_the_cpu_study_is_sized_to_the_target_flops(tmp_path):
  os.makedirs(tmp_path / "entropy_lm")
  shutil.copy(os.path.join(entropy_lm_workdir(), "config.json"), tmp_path / "entropy_lm" / "config.json")
  target = study.VARIANTS["cpu"]["target_mflops"] * 1e6
  widths = {}
  for run in study.plan("cpu", None, ["hnet_attn"]):
    c = study.make_config(run, "cpu", str(tmp_path))
    f = flops_per_byte(model_config_from_dict(c.model), c.data.seq_len, train=True)
    if run.kind == "ablation":  # one change to the family's sized model
      assert (c.model.d_model, c.model.d_ff) == widths[run.config], run.name
    else:
      assert abs(f / target - 1) <= 0.10, (run.name, f)
      widths[run.config] = (c.model.d_model, c.model.d_ff)
    assert (c.train.batch_size, c.data.seq_len, c.seed) == (8, 256, 0)  # the same bytes for every run
    assert c.opt.lr == (dict(run.overrides)["opt.lr"] if run.kind == "lr" else study.RECIPE_LR)
  with pytest.raises(ValueError, match="unknown runs"):
    study.plan("cpu", ["nope"], [])
  # Extra seeds: the family's sized model at its best lr, init and data order reseeded.
  for run in study.seed_runs({"flat": 1e-2}):
    c = study.make_config(run, "cpu", str(tmp_path))
    assert (c.model.d_model, c.opt.lr, c.data.seq_len) == (widths["flat"][0], 1e-2, 256) and c.seed in (1, 2)


def _result(name, bpb, kind="lr"):
  return {"name": name, "kind": kind, "bits_per_byte": bpb, "noise": {k: 0.1 for k in study.PAPER_NOISES},
          "noise_clean_bits_per_byte": 2.0, "noise_context": "cut before noising"}


def test_seeds_table_picks_the_best_lr_and_states_a_gap_only_beyond_the_seed_ranges():
  results = []
  for family, (at_low, at_recipe, at_high), seeds in (("flat", (2.70, 2.66, 2.68), (2.665, 2.662)),
                                                       ("word", (2.64, 2.63, 2.62), (2.63, 2.61)),
                                                       ("stride", (2.66, 2.65, 2.67), (2.651, 2.649))):
    results += [_result(family, at_recipe, "family"), _result(f"{family}-lr0.0025", at_low),
                _result(f"{family}-lr0.01", at_high)]
    results += [_result(f"{family}-seed{s}", v, "seed") for s, v in zip(study.EXTRA_SEEDS, seeds)]
  finished = {r["name"]: r for r in results}
  assert study.best_lrs(finished) == {"flat": 5e-3, "word": 1e-2, "stride": 5e-3}
  assert [r["name"] for r in study.seed_group("word", finished)] == ["word-lr0.01", "word-seed1", "word-seed2"]
  out = study.seeds_table(results)
  assert "| word | 2.6400 / 2.6300 / 2.6200 | 0.01 | 2.6200 ± 0.0100 (n=3) |" in out
  # word (2.61-2.63) vs stride (2.649-2.651): apart; stride vs flat (2.66-2.665): apart; a tie needs overlap.
  assert "word ahead of stride by 0.0300: the seed ranges do not overlap" in out
  # Noise is averaged on one basis: a run scored before the context was cut before noising is left out.
  word_row = lambda table: next(line for line in table.splitlines() if line.startswith("| word |"))
  assert "| +0.100 ± 0.000 (n=3) |" in word_row(out)
  del finished["word-seed1"]["noise_context"]
  assert "| +0.100 ± 0.000 (n=2) |" in word_row(study.seeds_table(results))
  finished["stride-seed1"]["bits_per_byte"] = 2.61
  assert "word ahead of stride" in study.seeds_table(results) and "a tie" in study.seeds_table(results)
  assert study.seed_runs({}) == [] and "hnet_1stage" not in study.best_lrs(finished)  # no sweep, no seeds
  # The main table and the noise table leave the sweeps and seeds to the seeds table.
  assert [r["name"] for r in study.shown_in_main_table(results)] == ["flat", "word", "stride"]


def test_tiny_study_trains_evaluates_reports_and_resumes(tmp_path):
  data_dir = str(tmp_path / "tfds")
  args = ["--variant", "tiny", "--workdir", str(tmp_path / "runs"), "--results", str(tmp_path / "out"),
          "--data_dir", data_dir, "--only", "mrt5"]  # one hierarchical run (with hard and soft deletion) keeps the suite short
  report = study.main(args)
  names = [r["name"] for r in report["runs"]]
  assert names == ["mrt5"]
  for r in report["runs"]:
    assert 0 < r["bits_per_byte"] < 9 and r["params"] > 0 and r["train_flops_per_byte"] > 0
    assert set(r["noise"]) >= {"antspeak", "drop", "uppercase"} and "noise_mean_delta" in r
  assert [len(r["stages"]) for r in report["runs"]] == [1]
  assert report["date"] == report["runs"][0]["finished"]  # when the run finished, not when it was reported
  assert "bits_per_byte_soft" in report["runs"][0]  # MrT5: hard and soft deletion
  assert os.path.exists(tmp_path / "out" / "study_tiny.png")
  with open(tmp_path / "out" / "study_tiny.json", encoding="utf-8") as f:
    assert json.load(f)["runs"] == report["runs"]
  mtime = os.path.getmtime(tmp_path / "runs" / "mrt5" / "result.json")
  again = study.main(args)  # finished runs are skipped
  assert again["runs"] == report["runs"]
  assert os.path.getmtime(tmp_path / "runs" / "mrt5" / "result.json") == mtime
  # On a fresh machine (no work dirs), the archived results are restored, nothing is retrained.
  assert os.path.exists(tmp_path / "out" / "study_tiny_runs" / "mrt5" / "metrics.jsonl")
  shutil.rmtree(tmp_path / "runs")
  fresh = study.main(args)
  assert fresh["runs"] == report["runs"]
  assert not os.path.exists(tmp_path / "runs" / "mrt5" / "checkpoints")


def test_a_preempted_run_is_not_recorded_and_stops_the_study(tmp_path, monkeypatch):
  """SIGTERM mid-run: the trainer saves a checkpoint and returns; the study must not score that as finished."""
  calls = []

  def preempted(c, workdir, progress):
    calls.append(workdir)
    return {"stopped": "SIGTERM", "step": 1}

  monkeypatch.setattr(study.trainer, "train_and_evaluate", preempted)
  args = ["--variant", "tiny", "--workdir", str(tmp_path / "runs"), "--results", str(tmp_path / "out"),
          "--only", "flat", "stride"]
  with pytest.raises(study.Interrupted, match="flat stopped at step 1 of 3 .SIGTERM."):
    study.main(args)
  assert len(calls) == 1  # the next run did not start
  assert not os.path.exists(tmp_path / "runs" / "flat" / "result.json")
  assert not os.path.exists(tmp_path / "out" / "study_tiny_runs" / "flat")


def test_report_on_a_fresh_machine_restores_blts_entropy_lm_config(tmp_path):
  """A finished blt is sized through its entropy LM's config: the archive must bring that back too."""
  archive = tmp_path / "archive"
  (archive / "entropy_lm").mkdir(parents=True)
  shutil.copy(os.path.join(entropy_lm_workdir(), "config.json"), archive / "entropy_lm" / "config.json")
  with open(archive / "entropy_lm" / "result.json", "w", encoding="utf-8") as f:
    json.dump({"steps": 3, "bits_per_byte": 7.9, "threshold": 2.5}, f)
  (archive / "blt").mkdir()
  result = {"name": "blt", "kind": "family", "params": 1000, "train_flops_per_byte": 2e5,
            "train_flops_per_byte_target_basis": 1e5, "target_ratio": [4.0], "bits_per_byte": 7.5,
            "bytes_per_second_median": 100.0, "stages": [{"stage": 0, "bytes_per_chunk": 4.4}]}
  with open(archive / "blt" / "result.json", "w", encoding="utf-8") as f:
    json.dump(result, f)
  with open(archive / "blt" / "metrics.jsonl", "w", encoding="utf-8") as f:
    f.write(json.dumps({"step": 3, "eval/bits_per_byte": 7.5}) + "\n")
  report = study.main(["--variant", "tiny", "--report", "--workdir", str(tmp_path / "runs"),
                       "--results", str(tmp_path / "out"), "--archive", str(archive)])
  assert [r["name"] for r in report["runs"]] == ["blt"]
  assert os.path.exists(tmp_path / "runs" / "entropy_lm" / "config.json")


def test_a_report_of_unchanged_runs_leaves_the_committed_json_byte_identical(tmp_path):
  """`--report` of the committed CPU study (runs archived before `finished` was recorded) changes nothing."""
  committed = os.path.join(study.RESULTS, "study_cpu.json")
  (tmp_path / "out").mkdir()
  shutil.copy(committed, tmp_path / "out" / "study_cpu.json")
  study.main(["--report", "--workdir", str(tmp_path / "runs"), "--results", str(tmp_path / "out"),
              "--archive", os.path.join(study.RESULTS, "study_cpu_runs")])
  with open(committed, "rb") as a, open(tmp_path / "out" / "study_cpu.json", "rb") as b:
    assert a.read() == b.read()


def test_report_date_machine_and_jax_come_from_the_runs():
  old = {"date": "2026-12-03", "machine": "x86_64, 2 CPUs", "jax": "0.10.2"}
  new = {"finished": "2026-12-07", "machine": "x86_64, 16 CPUs", "jax": "0.10.2"}
  assert study.provenance([{}, {}], old) == old  # archived before the fields: the report that covered them
  assert study.provenance([{}, new], old) == {"date": "2026-12-07", "machine": "x86_64, 16 CPUs + x86_64, 2 CPUs",
                                              "jax": "0.10.2"}
  assert study.provenance([new, {**new, "finished": "2026-12-05"}], old) == {
      "date": "2026-12-07", "machine": "x86_64, 16 CPUs", "jax": "0.10.2"}  # every run knows: the runs decide
  here = study.finished_where()
  assert study.provenance([{}], None) == {"date": here["finished"], "machine": here["machine"], "jax": here["jax"]}


def test_the_tiny_variant_writes_under_its_work_dir(tmp_path):
  """A smoke run leaves nothing for git to see: its JSON goes under the (ignored) work dir by default."""
  report = study.main(["--variant", "tiny", "--report", "--workdir", str(tmp_path / "runs")])
  assert report["runs"] == []
  assert os.path.exists(tmp_path / "runs" / "results" / "study_tiny.json")
  assert not os.path.exists(os.path.join(study.RESULTS, "study_tiny.json"))
