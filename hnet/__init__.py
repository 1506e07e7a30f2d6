"""hnet: token-free, byte-level hierarchical language models in JAX / Flax NNX."""

BOS_ID = 254  # never valid in UTF-8
EOS_ID = 255  # never valid in UTF-8
VOCAB_SIZE = 256
