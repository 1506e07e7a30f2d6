"""Byte-level data: the embedded corpus, TFDS builders and grain pipelines.

Import submodules explicitly (`from hnet.data import pipeline`): grain and tensorflow_datasets
load only then, so `hnet.model.lm` and friends import on machines without them.
"""
