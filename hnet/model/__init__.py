"""The byte-level hierarchy: the LM (`lm`), its stages, stacks, chunking and routers, cached generation, losses
and FLOP counts. Reads config, layers and kernels; knows nothing of optimizers, files or data pipelines."""
