"""The batch contract shared by data and train: the keys, dtypes and shapes of every model batch.

Legend: B rows (per process on the host, global once placed on the mesh), L = data.seq_len.

  inputs       int32 (B, L)    byte tokens 0..255 (documents are BOS 254 + UTF-8 bytes + EOS 255)
  targets      int32 (B, L)    the next token after each input
  segment_ids  int32 (B, L)    1, 2, ... per document piece in the row; 0 = padding
  loss_mask    float32 (B, L)  1 where `targets` continues the same piece (a byte that counts), else 0

Positions within a piece are not a key: the model derives them from `segment_ids`.
Built by `hnet.data.rows.to_batch`; placed on the mesh by `hnet.sharding.to_global`.
"""
import numpy as np

BATCH_DTYPES = {"inputs": np.int32, "targets": np.int32, "segment_ids": np.int32, "loss_mask": np.float32}
BATCH_KEYS = tuple(BATCH_DTYPES)
