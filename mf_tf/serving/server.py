"""An in-process TF Serving PredictionService over gRPC, backed by exported SavedModels.

Production serves the export folder with the `tensorflow/serving` container (see export/README.md).
This module speaks the same gRPC API (tensorflow_serving.apis) so that the client and the exported
models can be tested end to end without the `tensorflow_model_server` binary:

    with start_server("/tmp/export/models.config") as server:
      outputs = client.predict(server.address, "h36m", images)

It reads `models.config` for the model names and base paths and loads the latest version of each
with `tf.saved_model.load` (a SavedModel holds graphs and tensors only: loading runs no Python code
from the file). Bad requests get a gRPC error status with a message naming the bad value, never a
crash: NOT_FOUND for an unknown model, version or signature, INVALID_ARGUMENT for missing, extra
or ill-typed inputs, for an input whose TensorProto declares a shape but carries no values (it
would otherwise decode as all zeros), and for inputs that fail the signature's own checks (view
count, image size, value range, NaN). A request of more than `max_batch` frames (default
MAX_BATCH_FRAMES) is answered RESOURCE_EXHAUSTED from the declared shapes, before any decoding.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from mf_tf.serving import model_config

DEFAULT_SIGNATURE = "serving_default"
# Images and heatmaps of several views exceed gRPC's 4 MiB default message size.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
GRPC_OPTIONS = (("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES))
# Frames (leading batch axis) per request: bounds the memory and latency of one call (16 frames of
# 4 views at 256 px are 12.6 MB of uint8 images); clients split larger batches.
MAX_BATCH_FRAMES = 16


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """One served model: its name, loaded version and signatures.

  Attributes:
    name: Served model name (the rig name).
    version: The loaded version number.
    path: The version folder.
    module: The object returned by `tf.saved_model.load` (owns the variables).
    signatures: Signature name -> concrete function (keyword tensor inputs -> dict of tensors).
  """

  name: str
  version: int
  path: str
  module: object
  signatures: dict


def load_model(name: str, base_path: str, warmup: bool = True) -> LoadedModel:
  """Loads the latest complete version under `base_path`.

  Args:
    name: Served model name.
    base_path: Folder of numbered versions.
    warmup: Replay `assets.extra/tf_serving_warmup_requests` (when present) before serving, as
      TF Serving does, so the first real request does not pay for tracing and allocation.

  Raises:
    FileNotFoundError: No `<version>/saved_model.pb` under `base_path`.
  """
  version = model_config.latest_version(base_path)
  if version is None:
    raise FileNotFoundError(
        f"model {name!r}: no version folder with a saved_model.pb under base_path {base_path!r}")
  path = os.path.join(base_path, str(version))
  loaded = tf.saved_model.load(path)
  model = LoadedModel(name=name, version=version, path=path, module=loaded,
                      signatures=dict(loaded.signatures))
  warmup_path = os.path.join(path, model_config.ASSETS_EXTRA, model_config.WARMUP_FILE)
  if warmup and os.path.isfile(warmup_path):
    for log in model_config.read_warmup_requests(warmup_path):
      request = log.predict_log.request
      function = model.signatures[request.model_spec.signature_name or DEFAULT_SIGNATURE]
      function(**{key: tf.constant(tf.make_ndarray(proto))
                  for key, proto in request.inputs.items()})
  return model


def load_models(models_config_path: str, base_dir: str | None = None) -> dict[str, LoadedModel]:
  """Loads every model listed in a models.config.

  Args:
    models_config_path: A ModelServerConfig text proto.
    base_dir: When given, each model is read from `<base_dir>/<basename of its base_path>`
      instead of its base_path (for a config written for a container mount such as /models).

  Returns:
    Model name -> LoadedModel.
  """
  models = {}
  for name, base_path in model_config.read_models_config(models_config_path).items():
    if base_dir is not None:
      base_path = os.path.join(base_dir, os.path.basename(base_path.rstrip("/")))
    models[name] = load_model(name, base_path)
  return models


def error_summary(message: str) -> str:
  """The user-facing line of a TF runtime error: the failed check's own message when present."""
  lines = [line.strip() for line in message.splitlines() if line.strip()]
  for line in lines:
    if line.startswith("assertion failed:"):
      return line
  lines = [line for line in lines if line != "Graph execution error:"]
  return lines[0] if lines else message


def _input_specs(function) -> dict[str, tf.TensorSpec]:
  """Keyword input name -> TensorSpec of a signature's concrete function."""
  _, kwargs = function.structured_input_signature
  return dict(kwargs)


def _declared_shape(proto) -> list[int]:
  return [int(dim.size) for dim in proto.tensor_shape.dim]


def _carries_values(proto) -> bool:
  """Whether a TensorProto holds any values (tensor_content or one of the typed *_val lists)."""
  return any(field.name == "tensor_content" or field.name.endswith("_val")
             for field, _ in proto.ListFields())


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """The Predict RPC of TF Serving's PredictionService over loaded SavedModels.

  Args:
    models: Model name -> LoadedModel.
    max_batch: Most frames (leading batch axis of batched inputs) one request may carry.
  """

  def __init__(self, models: dict[str, LoadedModel], max_batch: int = MAX_BATCH_FRAMES):
    if int(max_batch) < 1:
      raise ValueError(f"max_batch={max_batch}, expected an integer >= 1")
    self.models = dict(models)
    self.max_batch = int(max_batch)

  def _resolve(self, request, context):
    spec = request.model_spec
    if spec.name not in self.models:
      context.abort(grpc.StatusCode.NOT_FOUND,
                    f"unknown model (rig) {spec.name!r}; served models: {sorted(self.models)}")
    model = self.models[spec.name]
    if spec.HasField("version") and spec.version.value != model.version:
      context.abort(grpc.StatusCode.NOT_FOUND,
                    f"model {spec.name!r} version {spec.version.value} is not loaded; "
                    f"loaded version: {model.version}")
    signature_name = spec.signature_name or DEFAULT_SIGNATURE
    names = sorted(model.signatures)
    if signature_name not in names:
      context.abort(grpc.StatusCode.NOT_FOUND,
                    f"model {spec.name!r} has no signature {signature_name!r}; "
                    f"signatures: {names}")
    return model, signature_name, model.signatures[signature_name]

  def _inputs(self, request, context, signature_name, function):
    specs = _input_specs(function)
    given = set(request.inputs)
    if given != set(specs):
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"signature {signature_name!r} takes inputs {sorted(specs)}, "
                    f"got {sorted(given)}")
    # Limits first, from the declared shapes alone: nothing is decoded for a refused request.
    for key, spec in specs.items():
      shape = _declared_shape(request.inputs[key])
      if spec.shape.rank and spec.shape[0] is None and shape and shape[0] > self.max_batch:
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                      f"input {key!r} holds {shape[0]} frames (shape {shape}), at most "
                      f"{self.max_batch} per request; split the batch")
    inputs = {}
    for key, spec in specs.items():
      proto = request.inputs[key]
      shape = _declared_shape(proto)
      if int(np.prod(shape)) > 0 and not _carries_values(proto):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"input {key!r} declares shape {shape} but carries no values; expected "
                      "tensor_content or typed values (e.g. from tf.make_tensor_proto)")
      try:
        array = tf.make_ndarray(proto)
      except Exception as error:  # A malformed TensorProto: report it, do not crash.
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"input {key!r}: not a readable TensorProto ({error})")
      if array.dtype != spec.dtype.as_numpy_dtype:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"input {key!r} has dtype {array.dtype.name}, signature "
                      f"{signature_name!r} expects {spec.dtype.name}")
      if not spec.shape.is_compatible_with(array.shape):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"input {key!r} has shape {list(array.shape)}, signature "
                      f"{signature_name!r} expects {spec.shape} (None: any size)")
      inputs[key] = tf.constant(array)
    return inputs

  def Predict(self, request, context):  # noqa: N802 (gRPC method name)
    model, signature_name, function = self._resolve(request, context)
    inputs = self._inputs(request, context, signature_name, function)
    try:
      outputs = function(**inputs)
    except tf.errors.InvalidArgumentError as error:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"model {model.name!r} signature {signature_name!r}: "
                    f"{error_summary(error.message)}")
    except tf.errors.OpError as error:
      context.abort(grpc.StatusCode.INTERNAL,
                    f"model {model.name!r} signature {signature_name!r} failed: {error.message}")
    wanted = list(request.output_filter) or sorted(outputs)
    unknown = sorted(set(wanted) - set(outputs))
    if unknown:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"output_filter names unknown outputs {unknown}; outputs: {sorted(outputs)}")
    response = predict_pb2.PredictResponse()
    response.model_spec.name = model.name
    response.model_spec.version.value = model.version
    response.model_spec.signature_name = signature_name
    for key in wanted:
      response.outputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(outputs[key])))
    return response


class RunningServer:
  """A started gRPC server; use as a context manager or call `stop()`.

  Attributes:
    address: "127.0.0.1:PORT" to pass to the client.
    servicer: The PredictionServicer (its `models` are the loaded models).
  """

  def __init__(self, server: grpc.Server, address: str, servicer: PredictionServicer):
    self._server = server
    self.address = address
    self.servicer = servicer

  def stop(self, grace: float | None = None) -> None:
    self._server.stop(grace).wait()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.stop()


def start_server(models_config_path: str, host: str = "127.0.0.1", port: int = 0,
                 base_dir: str | None = None, max_workers: int = 2,
                 max_batch: int = MAX_BATCH_FRAMES) -> RunningServer:
  """Loads the models of a models.config and serves them on `host:port` (0: an ephemeral port).

  Args:
    models_config_path: A ModelServerConfig text proto (as written by the export).
    host: Interface to bind; the default accepts local connections only.
    port: TCP port, 0 for a free one chosen by the OS.
    base_dir: See `load_models`.
    max_workers: Threads answering requests.
    max_batch: Most frames per request (larger ones get RESOURCE_EXHAUSTED).

  Returns:
    The running server.
  """
  servicer = PredictionServicer(load_models(models_config_path, base_dir), max_batch)
  server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=max_workers),
                       options=GRPC_OPTIONS)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
  bound = server.add_insecure_port(f"{host}:{port}")
  if bound == 0:
    raise OSError(f"could not bind a gRPC port on {host}:{port}")
  server.start()
  return RunningServer(server, f"{host}:{bound}", servicer)
