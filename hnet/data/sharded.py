"""This process's train iterator: one grain iterator, or the concatenation of the fixed data shards it reads.

With `data.shards` set, the global batch (shard 0's rows, then shard 1's, ...) is the same
whatever the number of processes: each process reads its own shards.
"""
import json

import jax
import numpy as np

from hnet.data import pipeline


class ShardedIterator:
  """Concatenates the batches of several data shards read by this process.

  Checkpointable through grain's handler (get_state/set_state on bytes).
  """

  def __init__(self, iterators: list):
    self.iterators = iterators

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    parts = [next(it) for it in self.iterators]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

  def get_state(self) -> bytes:
    return json.dumps([it.get_state() for it in self.iterators]).encode()

  def set_state(self, state: bytes) -> None:
    for it, s in zip(self.iterators, json.loads(state)):
      it.set_state(s)

  def start_prefetch(self) -> None:
    pass


def make_train_input(c):
  """This process's train iterator for config `c`: one grain iterator, or its shards when data.shards is set."""
  processes, index = jax.process_count(), jax.process_index()
  if c.data.shards <= 0:
    return pipeline.make_train_iterator(c.data, global_batch_size=c.train.batch_size, seed=c.seed)
  if c.data.shards % processes or c.train.batch_size % c.data.shards:
    raise ValueError(f"data.shards={c.data.shards} must be a multiple of the {processes} processes and divide "
                     f"train.batch_size={c.train.batch_size}")
  per_process = c.data.shards // processes
  return ShardedIterator([
      pipeline.make_train_iterator(c.data, global_batch_size=c.train.batch_size, seed=c.seed,
                                   process_index=shard, process_count=c.data.shards)
      for shard in range(index * per_process, (index + 1) * per_process)])
