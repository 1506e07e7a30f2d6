"""Official H-Net weights (goombalab/hnet, PyTorch) to hnet checkpoints: `python -m hnet.convert`."""
