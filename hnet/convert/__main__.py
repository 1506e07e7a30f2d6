"""`python -m hnet.convert`: the command line of hnet/convert/official.py (its docstring is the help)."""
import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from hnet.convert import official

__doc__ = official.__doc__  # absl prints the main module's docstring for --help

flags.DEFINE_string("pytorch", None, "Official state dict: a .pt file (read without torch) or .safetensors.")
config_flags.DEFINE_config_file("config", None, "Config of the same model, e.g. configs/hnet_2stage_XL.py.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "New work dir for the checkpoint (eval.py / train.py --workdir).")
flags.DEFINE_string("official_config", None, "Optional official JSON config to check --config against.")
flags.mark_flags_as_required(["pytorch", "config", "workdir"])


def main(argv):
  if len(argv) > 1:
    sys.exit(f"convert: error: unexpected arguments {argv[1:]}")
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  F = flags.FLAGS
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax chatter
  official.log.addHandler(logging.StreamHandler())  # plain lines, once: not also through absl's root handler
  official.log.propagate = False
  official.log.setLevel(logging.INFO)
  try:
    out = official.convert_file(F.pytorch, F.config, F.workdir, F.official_config)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"convert: error: {e}")
  print(f"wrote {out['checkpoint']}: {out['tensors']} tensors -> {out['parameters']:,} parameters; "
        f"model.capacity_slack={out['capacity_slack']} (capacity = length: no boundary dropped)\n"
        f"next: python eval.py --workdir {F.workdir} generate --prompt 'Hello'")


if __name__ == "__main__":
  app.run(main)
