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
shapes alone (a 29-byte TensorProto with one `int_val` may declare gigabytes;
`mf_tf.serving.request_limits`):

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
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from mf_tf.serving import batching as batching_lib
from mf_tf.serving import model_config
from mf_tf.serving import request_limits

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
      any size), the signature's own shape refined by the export record
      (`request_limits.expected_shapes`).
  """

  name: str
  version: int
  path: str
  module: object
  signatures: dict
  input_shapes: dict = dataclasses.field(default_factory=dict)


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
                      input_shapes=request_limits.expected_shapes(
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

  def Predict(self, request, context):  # noqa: N802 (gRPC method name)
    model, signature_name, function = self._resolve(request, context)
    try:
      inputs = request_limits.decode_inputs(request, model, signature_name, function,
                                            self.max_batch, self.max_request_bytes)
    except request_limits.RequestError as error:
      context.abort(error.code, error.message)
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
    models_config_path: The models.config; its folder holds the export's batching_parameters.
    batching: False / None: off. True: the `batching_parameters` file beside models.config
      (the export writes it from config.export.batching). A path: that file. A
      BatchingSettings: itself.

  Raises:
    FileNotFoundError: batching=True and there is no batching_parameters beside models.config.
  """
  if batching is None or batching is False:
    return None
  if isinstance(batching, batching_lib.BatchingSettings):
    return batching
  if batching is True:
    path = os.path.join(os.path.dirname(os.path.abspath(models_config_path)),
                        batching_lib.BATCHING_PARAMETERS)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"batching=True but there is no {path!r}: export the rigs again "
                              "(--mode=export writes it) or pass BatchingSettings")
    return batching_lib.read(path)
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
    largest = request_limits.largest_request_bytes(models, int(max_batch))
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
