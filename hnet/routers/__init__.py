"""Routers decide which positions start a chunk. All share one call signature:

  router(x_BLD, tokens_BL=..., segment_ids_BL=..., positions_BL=..., train=...) -> RouterOutput
"""
from flax import nnx

from hnet.config import ModelConfig, StageConfig
from hnet.routers.base import RouterOutput
from hnet.routers.cosine import CosineRouter
from hnet.routers.delete_gate import DeleteGateRouter
from hnet.routers.entropy import EntropyRouter
from hnet.routers.stride import StrideRouter
from hnet.routers.whitespace import WhitespaceRouter

__all__ = ["RouterOutput", "make_router"]


def make_router(cfg: ModelConfig, st: StageConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  if cfg.router == "cosine":
    return CosineRouter(st.d_model, target_ratio=st.target_ratio)
  if cfg.router == "delete_gate":
    return DeleteGateRouter(st.d_model, scale=cfg.delete_gate_scale, rngs=rngs)
  if cfg.router == "whitespace":
    return WhitespaceRouter()
  if cfg.router == "entropy":
    return EntropyRouter(cfg, rngs=rngs)
  if cfg.router == "stride":
    return StrideRouter(stride=round(st.target_ratio))
  raise ValueError(f"model.router={cfg.router!r} has no router module")
