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
count, image size, value range, NaN).

A request is bounded before anything in it is decoded, from the TensorProtos' declared dtypes and
shapes alone (a 29-byte TensorProto with one `int_val` may declare gigabytes):

- its bytes on the wire: gRPC refuses a message over `max_request_bytes` (RESOURCE_EXHAUSTED);
- every input's shape: the signature's rank and, from the model's export record
  (`assets.extra/export_config.json`), its fixed dimensions (views, image or heatmap size,
  joints); any other shape is INVALID_ARGUMENT naming the input, the declared shape and the
  expected one;
- the batch: more than `max_batch` frames (default MAX_BATCH_FRAMES) is RESOURCE_EXHAUSTED;
- the decoded size: more than `max_request_bytes` over all inputs is RESOURCE_EXHAUSTED (this
  bounds models without an export record, whose dimensions are unknown);
- the content: `tensor_content` must hold exactly count x dtype size bytes; the dtype's `*_val`
  list 1 to count values (fewer are padded with the last one, as TensorFlow decodes them).

Pass `tls=ServerTls(...)` to serve over TLS (`grpc.ssl_server_credentials`; mutual TLS when
`client_ca` is given), and `batching=True` to batch concurrent requests as
`tensorflow_model_server --enable_batching` does, with the export's `batching_parameters` file
(`mf_tf.serving.batching`).
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

from mf_tf.serving import batching as batching_lib
from mf_tf.serving import export as export_lib
from mf_tf.serving import model_config

DEFAULT_SIGNATURE = "serving_default"
# Images and heatmaps of several views exceed gRPC's 4 MiB default message size.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
GRPC_OPTIONS = (("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES))
# Frames (leading batch axis) per request: bounds the memory and latency of one call (16 frames of
# 4 views at 256 px are 12.6 MB of uint8 images); clients split larger batches.
MAX_BATCH_FRAMES = 16
# Headroom of the request limit over the largest valid request's decoded bytes: protobuf's packed
# `*_val` lists take up to 2 bytes per uint8 value (varints), plus the request's envelope.
_WIRE_FACTOR = 2
_ENVELOPE_BYTES = 1024 * 1024
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


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """One served model: its name, loaded version and signatures.

  Attributes:
    name: Served model name (the rig name).
    version: The loaded version number.
    path: The version folder.
    module: The object returned by `tf.saved_model.load` (owns the variables).
    signatures: Signature name -> concrete function (keyword tensor inputs -> dict of tensors).
    input_shapes: Signature name -> input name -> the TensorShape a request must have (None:
      any size), the signature's own shape refined by the export record (`expected_shapes`).
  """

  name: str
  version: int
  path: str
  module: object
  signatures: dict
  input_shapes: dict = dataclasses.field(default_factory=dict)


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
    for key, spec in _input_specs(function).items():
      shape = spec.shape
      known = fixed.get((signature_name, key))
      if known is not None and shape.is_compatible_with(known):
        shape = shape.merge_with(known)
      shapes[signature_name][key] = shape
  return shapes


def largest_request_bytes(models: dict, max_batch: int) -> int | None:
  """Decoded bytes of the largest valid request to any model, or None when a size is unknown."""
  largest = 0
  for model in models.values():
    for signature_name, function in model.signatures.items():
      specs = _input_specs(function)
      total = 0
      for key, shape in model.input_shapes.get(signature_name, {}).items():
        dims = [max_batch if i == 0 and dim is None else dim
                for i, dim in enumerate(shape.as_list())] if shape.rank is not None else [None]
        if None in dims:
          return None
        total += int(np.prod(dims, dtype=np.int64)) * specs[key].dtype.size
      largest = max(largest, total)
  return largest


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
  signatures = dict(loaded.signatures)
  model = LoadedModel(name=name, version=version, path=path, module=loaded, signatures=signatures,
                      input_shapes=expected_shapes(
                          signatures, model_config.read_export_config(base_path, version)))
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


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """The Predict RPC of TF Serving's PredictionService over loaded SavedModels.

  Args:
    models: Model name -> LoadedModel.
    max_batch: Most frames (leading batch axis of batched inputs) one request may carry.
    max_request_bytes: Most decoded bytes (all inputs of one request together); None: 256 MiB.
    batcher: A `batching.Batcher` that runs concurrent requests of one model version and
      signature together; None: each request runs alone.
  """

  def __init__(self, models: dict[str, LoadedModel], max_batch: int = MAX_BATCH_FRAMES,
               max_request_bytes: int | None = None,
               batcher: batching_lib.Batcher | None = None):
    if int(max_batch) < 1:
      raise ValueError(f"max_batch={max_batch}, expected an integer >= 1")
    if max_request_bytes is not None and int(max_request_bytes) < 1:
      raise ValueError(f"max_request_bytes={max_request_bytes}, expected a positive integer")
    if batcher is not None and batcher.settings.max_batch_size < int(max_batch):
      raise ValueError(f"batching max_batch_size={batcher.settings.max_batch_size} is below "
                       f"max_batch={max_batch}, the largest request")
    self.models = dict(models)
    self.max_batch = int(max_batch)
    self.max_request_bytes = int(max_request_bytes or MAX_MESSAGE_BYTES)
    self.batcher = batcher

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

  def _check_declared(self, context, model, signature_name, key, proto, spec) -> int:
    """Checks one input from its declared dtype and shape; returns its decoded bytes."""
    where = f"signature {signature_name!r} of model {model.name!r}"
    if proto.dtype != spec.dtype.as_datatype_enum:
      try:
        declared = tf.dtypes.as_dtype(proto.dtype).name
      except TypeError:
        declared = f"enum {proto.dtype}"
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {key!r} has dtype {declared}, signature {signature_name!r} "
                    f"expects {spec.dtype.name}")
    expected = model.input_shapes.get(signature_name, {}).get(key, spec.shape)
    shape = _declared_shape(proto)
    wanted = _shape_text(expected, self.max_batch)
    if proto.tensor_shape.unknown_rank or any(dim < 0 for dim in shape):
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {key!r} declares shape {shape} (unknown rank or a negative size); "
                    f"{where} expects {wanted}")
    if not expected.is_compatible_with(shape):
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {key!r} has shape {shape}, {where} expects {wanted}")
    if expected.rank and expected[0] is None and shape[0] > self.max_batch:
      context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"input {key!r} holds {shape[0]} frames (shape {shape}), at most "
                    f"{self.max_batch} per request; split the batch")
    count = int(np.prod(shape, dtype=object))  # Python ints: no overflow for absurd shapes.
    size = count * spec.dtype.size
    if size > self.max_request_bytes:  # Before the content checks: no length is compared.
      return size
    if proto.tensor_content:
      if len(proto.tensor_content) != size:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"input {key!r} declares shape {shape} of {spec.dtype.name} ({size} "
                      f"bytes) but its tensor_content holds {len(proto.tensor_content)} bytes")
      return size
    field, values = _value_count(proto, spec.dtype)
    if count > 0 and values == 0:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {key!r} declares shape {shape} but carries no values; expected "
                    f"tensor_content or {field} (e.g. from tf.make_tensor_proto)")
    if values > count:
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"input {key!r} declares shape {shape} ({count} values) but its {field} "
                    f"holds {values}")
    return size

  def _inputs(self, request, context, model, signature_name, function):
    specs = _input_specs(function)
    given = set(request.inputs)
    if given != set(specs):
      context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                    f"signature {signature_name!r} takes inputs {sorted(specs)}, "
                    f"got {sorted(given)}")
    # Limits first, from the declared dtypes and shapes alone: nothing is decoded for a refused
    # request (a few bytes of TensorProto may declare gigabytes).
    sizes = {key: self._check_declared(context, model, signature_name, key, request.inputs[key],
                                       spec) for key, spec in specs.items()}
    if sum(sizes.values()) > self.max_request_bytes:
      shapes = {key: _declared_shape(request.inputs[key]) for key in specs}
      context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"inputs {shapes} declare {sum(sizes.values())} bytes, at most "
                    f"{self.max_request_bytes} per request; split the batch")
    inputs = {}
    for key, spec in specs.items():
      try:
        array = tf.make_ndarray(request.inputs[key])
      except Exception as error:  # A malformed TensorProto: report it, do not crash.
        context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                      f"input {key!r}: not a readable TensorProto ({error})")
      inputs[key] = array
    return inputs

  def Predict(self, request, context):  # noqa: N802 (gRPC method name)
    model, signature_name, function = self._resolve(request, context)
    inputs = self._inputs(request, context, model, signature_name, function)
    try:
      if self.batcher is None:
        outputs = batching_lib.call(function, inputs)
      else:
        outputs = self.batcher.run((model.name, model.version, signature_name), function, inputs)
    except batching_lib.QueueFullError as error:
      context.abort(grpc.StatusCode.UNAVAILABLE,
                    f"model {model.name!r} signature {signature_name!r}: {error}")
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
      response.outputs[key].CopyFrom(tf.make_tensor_proto(outputs[key]))
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
    if self.servicer.batcher is not None:
      self.servicer.batcher.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.stop()


@dataclasses.dataclass(frozen=True)
class ServerTls:
  """PEM files of a TLS endpoint (`grpc.ssl_server_credentials`).

  Attributes:
    cert: The server's certificate chain.
    key: Its private key.
    client_ca: When given, clients must present a certificate signed by this CA (mutual TLS).
  """

  cert: str
  key: str
  client_ca: str | None = None

  def credentials(self) -> grpc.ServerCredentials:
    """Reads the files; FileNotFoundError names the missing one."""
    chain = read_pem(self.cert, "server certificate (cert)")
    key = read_pem(self.key, "server private key (key)")
    client_ca = None if self.client_ca is None else read_pem(
        self.client_ca, "client CA certificate (client_ca)")
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                       require_client_auth=client_ca is not None)


def read_pem(path: str, what: str) -> bytes:
  """The bytes of a PEM file; FileNotFoundError / ValueError naming `what` and the path."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"TLS {what} file {path!r} does not exist")
  with open(path, "rb") as f:
    data = f.read()
  if b"-----BEGIN " not in data:
    raise ValueError(f"TLS {what} file {path!r} is not PEM (no '-----BEGIN' line)")
  return data


def batching_settings(models_config_path: str,
                      batching) -> batching_lib.BatchingSettings | None:
  """The batching of `start_server(batching=...)`: None (off), or its settings.

  Args:
    models_config_path: The models.config; its folder may hold the export's batching_parameters.
    batching: False / None: off. True: the `batching_parameters` file beside models.config, or
      the default `BatchingSettings` when there is none. A path: that file. A BatchingSettings:
      itself.
  """
  if batching is None or batching is False:
    return None
  if isinstance(batching, batching_lib.BatchingSettings):
    return batching
  if batching is True:
    path = os.path.join(os.path.dirname(os.path.abspath(models_config_path)),
                        batching_lib.BATCHING_PARAMETERS)
    return batching_lib.read(path) if os.path.isfile(path) else batching_lib.BatchingSettings()
  return batching_lib.read(os.fspath(batching))


def start_server(models_config_path: str, host: str = "127.0.0.1", port: int = 0,
                 base_dir: str | None = None, max_workers: int | None = None,
                 max_batch: int = MAX_BATCH_FRAMES, max_request_bytes: int | None = None,
                 tls: ServerTls | None = None, batching=None) -> RunningServer:
  """Loads the models of a models.config and serves them on `host:port` (0: an ephemeral port).

  Args:
    models_config_path: A ModelServerConfig text proto (as written by the export).
    host: Interface to bind; the default accepts local connections only.
    port: TCP port, 0 for a free one chosen by the OS.
    base_dir: See `load_models`.
    max_workers: Threads answering requests; None: 2, or with batching twice max_batch_size
      (each request waits in its thread while its batch gathers: fewer threads than concurrent
      clients would cap the batches).
    max_batch: Most frames per request (larger ones get RESOURCE_EXHAUSTED).
    max_request_bytes: Most bytes of a request, on the wire and decoded (larger ones get
      RESOURCE_EXHAUSTED). None: twice the largest valid request to the served models (at
      `max_batch` frames) plus 1 MiB, or MAX_MESSAGE_BYTES when a model's sizes are unknown.
      A request's memory is then bounded by about `max_workers` times this.
    tls: Serve over TLS with these files; None: plaintext.
    batching: Batch concurrent requests (`batching_settings`: True reads the export's
      batching_parameters); None or False: every request runs alone.

  Returns:
    The running server.
  """
  settings = batching_settings(models_config_path, batching)
  models = load_models(models_config_path, base_dir)
  if max_request_bytes is None:
    largest = largest_request_bytes(models, int(max_batch))
    max_request_bytes = (MAX_MESSAGE_BYTES if largest is None else
                         min(MAX_MESSAGE_BYTES, _WIRE_FACTOR * largest + _ENVELOPE_BYTES))
  if max_workers is None:
    max_workers = 2 if settings is None else 2 * settings.max_batch_size
  servicer = PredictionServicer(models, max_batch, max_request_bytes,
                                None if settings is None else batching_lib.Batcher(settings))
  credentials = None if tls is None else tls.credentials()
  options = (("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
             ("grpc.max_receive_message_length", servicer.max_request_bytes))
  server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=max_workers),
                       options=options)
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
  address = f"{host}:{port}"
  bound = (server.add_insecure_port(address) if credentials is None else
           server.add_secure_port(address, credentials))
  if bound == 0:
    raise OSError(f"could not bind a gRPC port on {host}:{port}")
  server.start()
  return RunningServer(server, f"{host}:{bound}", servicer)
