"""Pallas kernels: the SSD scan for TPU (Mosaic) and GPU (Triton), selected by `model.ssd_impl='pallas'`."""
