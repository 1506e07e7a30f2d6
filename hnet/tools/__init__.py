"""Tools run as `python -m hnet.tools.<name>` on a trained run (entropy threshold calibration)."""
