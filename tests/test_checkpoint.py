"""The one parameter-shape check shared by resuming, loading a run and loading BLT's entropy LM."""
import jax
import numpy as np
import pytest

from hnet.train.checkpoint import check_param_shapes


def test_param_shape_check_names_the_first_differing_parameter():
  model = {"a": {"w": jax.ShapeDtypeStruct((2, 3), np.float32)}, "b": np.zeros((4,))}
  check_param_shapes({"a": {"w": np.zeros((2, 3))}, "b": np.zeros((4,))}, model, "here")
  with pytest.raises(ValueError, match=r"^run: parameter a/w has shape \(3, 2\) in the checkpoint but \(2, 3\) in the "
                                       r"model$"):
    check_param_shapes({"a": {"w": np.zeros((3, 2))}, "b": np.zeros((5,))}, model, "run")
  with pytest.raises(ValueError, match=r"^run: parameter b is missing from the checkpoint$"):
    check_param_shapes({"a": {"w": np.zeros((2, 3))}}, model, "run")
  with pytest.raises(ValueError, match=r"^run: the model has no parameter a/v$"):
    check_param_shapes({"a": {"v": np.zeros(()), "w": np.zeros((2, 3))}, "b": np.zeros((4,))}, model, "run")
