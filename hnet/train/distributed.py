"""Multi-host start-up through `jax.distributed.initialize`.

- TPU pods and SLURM GPU clusters: `--distributed=auto` lets JAX read the environment.
- Anything else: `--coordinator=host:port --num_processes=N --process_id=i` on every host.
- CPU processes (tests, debugging) use gloo collectives.
"""
import jax


def initialize(mode: str = "none", coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, local_device_ids: list[int] | None = None) -> None:
  if mode == "none" and not coordinator:
    return
  if mode not in ("none", "auto", "explicit"):
    raise ValueError(f"--distributed={mode!r}: use 'none', 'auto' or 'explicit'")
  if coordinator or mode == "explicit":
    if not coordinator or num_processes is None or process_id is None:
      raise ValueError("explicit multi-host start needs --coordinator=host:port, --num_processes and --process_id")
  if jax.config.jax_platforms == "cpu" or (jax.config.jax_platforms or "").startswith("cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, local_device_ids=local_device_ids)
  else:
    jax.distributed.initialize()
