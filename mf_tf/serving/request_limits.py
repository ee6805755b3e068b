"""What a Predict request to a served model may hold, checked before anything in it is decoded.

A few bytes of TensorProto may declare gigabytes (a 29-byte proto with one `int_val`), so the
in-process server (`mf_tf.serving.server`) bounds every request from its TensorProtos' declared
dtypes and shapes alone: each input's shape against the signature's rank and the rig's fixed
dimensions (`expected_shapes`, from the export record), the batch against `max_batch` frames, the
decoded bytes against `max_request_bytes`, and the content against the declared shape; then it
decodes (`decode_inputs`). A refused request raises `RequestError` with the gRPC status to answer
and a message naming the input, the declared shape and the expected one.
"""

from __future__ import annotations

import grpc
import numpy as np
import tensorflow as tf

from mf_tf.serving import export as export_lib

# The TensorProto value list TensorFlow decodes for each dtype (tensor.cc, tensor_util.py).
_VALUE_FIELDS = {
    tf.float16: "half_val", tf.bfloat16: "half_val", tf.float32: "float_val",
    tf.float64: "double_val", tf.int8: "int_val", tf.int16: "int_val", tf.int32: "int_val",
    tf.uint8: "int_val", tf.uint16: "int_val", tf.int64: "int64_val", tf.uint32: "uint32_val",
    tf.uint64: "uint64_val", tf.bool: "bool_val", tf.complex64: "scomplex_val",
    tf.complex128: "dcomplex_val",
}
# complex values come as (real, imaginary) pairs in their list.
_VALUES_PER_ELEMENT = {tf.complex64: 2, tf.complex128: 2}


class RequestError(Exception):
  """A refused request: the gRPC status code to answer with, and the message.

  Attributes:
    code: A `grpc.StatusCode`.
    message: Names the bad input, what it declares and what was expected.
  """

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message


def input_specs(function) -> dict[str, tf.TensorSpec]:
  """Keyword input name -> TensorSpec of a signature's concrete function."""
  _, kwargs = function.structured_input_signature
  return dict(kwargs)


def expected_shapes(signatures: dict, record: dict | None) -> dict:
  """The shape every input of every signature must have, batch axis first.

  The exported signatures declare any size on every axis (their graphs check the sizes, with a
  message naming them); the export record (`assets.extra/export_config.json`, written by
  `mf_tf.serving.export.export_rig`) gives the rig's fixed ones, so that a request can be
  checked from its declared shape before anything is decoded.

  Args:
    signatures: Signature name -> concrete function.
    record: The export record, or None (then only the signatures' own shapes are known).

  Returns:
    Signature name -> input name -> tf.TensorShape ([None, V, S, S, 3] for images, ...).
  """
  fixed = {}
  if record:
    try:
      views, image, heatmap, joints = (int(record[key]) for key in (
          "num_views", "image_size", "heatmap_size", "num_joints"))
      crop = int(record.get("crop_heatmap_size", export_lib.CROP_HEATMAP_SIZE))
    except (KeyError, TypeError, ValueError):
      views = None
    if views is not None:
      fixed = {
          (export_lib.SIGNATURE_IMAGES, "images"): [None, views, image, image, 3],
          (export_lib.SIGNATURE_IMAGES_FLOAT, "images"): [None, views, image, image, 3],
          (export_lib.SIGNATURE_HEATMAPS, "heatmaps"): [None, views, heatmap, heatmap, joints],
          (export_lib.SIGNATURE_CROPS, "crop_heatmaps"): [None, views, crop, crop, joints],
          (export_lib.SIGNATURE_CROPS, "crop_affines"): [None, views, 3, 3],
      }
  shapes = {}
  for signature_name, function in signatures.items():
    shapes[signature_name] = {}
    for key, spec in input_specs(function).items():
      shape = spec.shape
      known = fixed.get((signature_name, key))
      if known is not None and shape.is_compatible_with(known):
        shape = shape.merge_with(known)
      shapes[signature_name][key] = shape
  return shapes


def largest_request_bytes(models: dict, max_batch: int) -> int | None:
  """Decoded bytes of the largest valid request to any model, or None when a size is unknown.

  Args:
    models: Model name -> `mf_tf.serving.server.LoadedModel`.
    max_batch: Frames of the largest request.
  """
  largest = 0
  for model in models.values():
    for signature_name, function in model.signatures.items():
      specs = input_specs(function)
      total = 0
      for key, shape in model.input_shapes.get(signature_name, {}).items():
        dims = [max_batch if i == 0 and dim is None else dim
                for i, dim in enumerate(shape.as_list())] if shape.rank is not None else [None]
        if None in dims:
          return None
        total += int(np.prod(dims, dtype=np.int64)) * specs[key].dtype.size
      largest = max(largest, total)
  return largest


def decode_inputs(request, model, signature_name: str, function, max_batch: int,
                  max_request_bytes: int) -> dict:
  """The inputs of a Predict request as arrays, once its declared sizes are within the limits.

  Args:
    request: A `predict_pb2.PredictRequest`.
    model: The `mf_tf.serving.server.LoadedModel` it asks.
    signature_name: The signature it calls.
    function: That signature's concrete function.
    max_batch: Most frames (leading batch axis of batched inputs) per request.
    max_request_bytes: Most decoded bytes, all inputs together.

  Returns:
    Input name -> np.ndarray.

  Raises:
    RequestError: INVALID_ARGUMENT (missing, extra or ill-typed inputs, a shape the signature does
      not take, content that does not match the declared shape, an unreadable TensorProto) or
      RESOURCE_EXHAUSTED (more than `max_batch` frames or `max_request_bytes` bytes).
  """
  specs = input_specs(function)
  given = set(request.inputs)
  if given != set(specs):
    raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                       f"signature {signature_name!r} takes inputs {sorted(specs)}, "
                       f"got {sorted(given)}")
  # Limits first, from the declared dtypes and shapes alone: nothing is decoded for a refused
  # request (a few bytes of TensorProto may declare gigabytes).
  sizes = {key: check_declared(model, signature_name, key, request.inputs[key], spec, max_batch,
                               max_request_bytes) for key, spec in specs.items()}
  if sum(sizes.values()) > max_request_bytes:
    shapes = {key: _declared_shape(request.inputs[key]) for key in specs}
    raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"inputs {shapes} declare {sum(sizes.values())} bytes, at most "
                       f"{max_request_bytes} per request; split the batch")
  inputs = {}
  for key in specs:
    try:
      inputs[key] = tf.make_ndarray(request.inputs[key])
    except Exception as error:  # A malformed TensorProto: report it, do not crash.
      raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                         f"input {key!r}: not a readable TensorProto ({error})") from error
  return inputs


def check_declared(model, signature_name: str, key: str, proto, spec: tf.TensorSpec,
                   max_batch: int, max_request_bytes: int) -> int:
  """Checks one input from its declared dtype and shape; returns its decoded bytes.

  Args:
    model: The `mf_tf.serving.server.LoadedModel` asked (its `input_shapes`).
    signature_name: The signature called.
    key: The input's name.
    proto: Its TensorProto.
    spec: The signature's TensorSpec of it.
    max_batch: Most frames per request.
    max_request_bytes: Most decoded bytes; the size of a larger input is returned without its
      content checked (the caller refuses it by that size).

  Raises:
    RequestError: see `decode_inputs`.
  """
  invalid = grpc.StatusCode.INVALID_ARGUMENT
  where = f"signature {signature_name!r} of model {model.name!r}"
  if proto.dtype != spec.dtype.as_datatype_enum:
    try:
      declared = tf.dtypes.as_dtype(proto.dtype).name
    except TypeError:
      declared = f"enum {proto.dtype}"
    raise RequestError(invalid, f"input {key!r} has dtype {declared}, signature "
                                f"{signature_name!r} expects {spec.dtype.name}")
  expected = model.input_shapes.get(signature_name, {}).get(key, spec.shape)
  shape = _declared_shape(proto)
  wanted = _shape_text(expected, max_batch)
  if proto.tensor_shape.unknown_rank or any(dim < 0 for dim in shape):
    raise RequestError(invalid, f"input {key!r} declares shape {shape} (unknown rank or a "
                                f"negative size); {where} expects {wanted}")
  if not expected.is_compatible_with(shape):
    raise RequestError(invalid, f"input {key!r} has shape {shape}, {where} expects {wanted}")
  if expected.rank and expected[0] is None and shape[0] > max_batch:
    raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                       f"input {key!r} holds {shape[0]} frames (shape {shape}), at most "
                       f"{max_batch} per request; split the batch")
  count = int(np.prod(shape, dtype=object))  # Python ints: no overflow for absurd shapes.
  size = count * spec.dtype.size
  if size > max_request_bytes:  # Before the content checks: no length is compared.
    return size
  if proto.tensor_content:
    if len(proto.tensor_content) != size:
      raise RequestError(invalid, f"input {key!r} declares shape {shape} of {spec.dtype.name} "
                                  f"({size} bytes) but its tensor_content holds "
                                  f"{len(proto.tensor_content)} bytes")
    return size
  field, values = _value_count(proto, spec.dtype)
  if count > 0 and values == 0:
    raise RequestError(invalid, f"input {key!r} declares shape {shape} but carries no values; "
                                f"expected tensor_content or {field} (e.g. from "
                                "tf.make_tensor_proto)")
  if values > count:
    raise RequestError(invalid, f"input {key!r} declares shape {shape} ({count} values) but its "
                                f"{field} holds {values}")
  return size


def _declared_shape(proto) -> list[int]:
  return [int(dim.size) for dim in proto.tensor_shape.dim]


def _value_count(proto, dtype: tf.DType) -> tuple[str, int]:
  """(name, number of values) of the TensorProto list TensorFlow decodes for `dtype`."""
  field = _VALUE_FIELDS.get(dtype)
  if field is None:
    return "tensor_content", 0
  return field, len(getattr(proto, field)) // _VALUES_PER_ELEMENT.get(dtype, 1)


def _shape_text(shape: tf.TensorShape, max_batch: int) -> str:
  """"[batch <= 16, 3, 64, 64, 3]" for a TensorShape whose None axes take any size."""
  if shape.rank is None:
    return "any shape"
  dims = shape.as_list()
  return "[" + ", ".join(
      (f"batch <= {max_batch}" if i == 0 else "any") if dim is None else str(dim)
      for i, dim in enumerate(dims)) + "]"
