r"""Server-side batching: TF Serving's `batching_parameters` file, and the same batching in process.

`tensorflow_model_server --enable_batching --batching_parameters_file=<export_dir>/
batching_parameters` gathers concurrent Predict requests for one model and signature into one
Session::Run: their inputs concatenated along dimension 0, the outputs split back along it. That
is valid only when every input and output of a signature carries the frames on its first axis.
Every exported signature does (`mf_tf.serving.export`: images [B, V, S, S, 3], heatmaps
[B, V, H, W, J], crop_heatmaps [B, V, C, C, J] with crop_affines [B, V, 3, 3]; every output
[B, ...]), and the per-frame work of fuse_crops runs frame by frame (`tf.map_fn`), so one file
serves them all.

The file is the text format of TF Serving's `BatchingParameters` message
(tensorflow_serving/servables/tensorflow/session_bundle_config.proto), whose Python module the
tensorflow-serving-api package does not ship: `BatchingParameters` here is that message built
from the same field names, numbers and types (`google.protobuf.Int64Value` wrappers), so text
that parses here parses in the server.

`Batcher` batches the in-process server (`mf_tf.serving.server.start_server(batching=...)`)
with the same parameters: a request joins the open batch of its (model, version, signature)
until the batch holds `max_batch_size` frames or `batch_timeout_micros` passed since its first
request, then runs once on one of `num_batch_threads` threads (the batch keeps taking requests
while it waits for a thread), padded to the next of `allowed_batch_sizes` with copies of its first
frame when those are given; a request that would find `max_enqueued_batches` batches of its
signature waiting is refused (UNAVAILABLE), as TF Serving refuses it. Unlike TF Serving, where a
batch that fails fails every request in it, a failed batch is run again request by request, so
that only the bad request gets the error.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import os
import threading

import numpy as np
import tensorflow as tf
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2

from mf_tf import files

BATCHING_PARAMETERS = "batching_parameters"  # Beside models.config in the export folder.


@dataclasses.dataclass(frozen=True)
class BatchingSettings:
  """The batching parameters both servers use (TF Serving's names and meanings).

  No field has a default: the export mode builds it from config.export.batching
  (`mf_tf.modes.export.batching_settings`), and `parse` reads every field from the file.

  Attributes:
    max_batch_size: Most frames in one batch. At least the largest request
      (`mf_tf.serving.server.MAX_BATCH_FRAMES`), which TF Serving would otherwise refuse.
    batch_timeout_micros: Longest wait of a batch's first request for others, microseconds.
    max_enqueued_batches: Most batches of one signature waiting for a thread; more requests are
      refused (UNAVAILABLE) rather than queued without bound.
    num_batch_threads: Batches run at once (about the server's CPU cores).
    allowed_batch_sizes: Increasing batch sizes ending at max_batch_size; a batch is padded to
      the next one. Empty: no padding.
  """

  max_batch_size: int
  batch_timeout_micros: int
  max_enqueued_batches: int
  num_batch_threads: int
  allowed_batch_sizes: tuple[int, ...]

  def __post_init__(self):
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
      value = getattr(self, name)
      if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"batching {name}={value!r}, expected an integer >= 1")
    timeout = self.batch_timeout_micros
    if isinstance(timeout, bool) or int(timeout) != timeout or timeout < 0:
      raise ValueError(f"batching batch_timeout_micros={timeout!r}, expected an integer >= 0")
    sizes = tuple(int(size) for size in self.allowed_batch_sizes)
    object.__setattr__(self, "allowed_batch_sizes", sizes)
    if sizes and (any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1
                  or sizes[-1] != self.max_batch_size):
      raise ValueError(f"batching allowed_batch_sizes={list(sizes)}, expected increasing sizes "
                       f">= 1 ending at max_batch_size={self.max_batch_size}")

  @property
  def timeout_s(self) -> float:
    return self.batch_timeout_micros * 1e-6

  def padded_size(self, frames: int) -> int:
    """The batch size `frames` frames run at: the next allowed size, or `frames`."""
    return next((size for size in self.allowed_batch_sizes if size >= frames), frames)


# ----------------------------------------------------------------------------- the file


@functools.lru_cache(maxsize=None)
def batching_parameters_class():
  """The message class of TF Serving's `tensorflow.serving.BatchingParameters`.

  Built in a private descriptor pool (the real message, if loaded, stays the default pool's).
  """
  proto = descriptor_pb2.FileDescriptorProto(
      name="mf_tf/serving/batching_parameters.proto", package="tensorflow.serving",
      syntax="proto3", dependency=["google/protobuf/wrappers.proto"])
  message = proto.message_type.add(name="BatchingParameters")
  field = descriptor_pb2.FieldDescriptorProto
  wrapped = ((1, "max_batch_size", "Int64Value"), (2, "batch_timeout_micros", "Int64Value"),
             (3, "max_enqueued_batches", "Int64Value"), (4, "num_batch_threads", "Int64Value"),
             (5, "thread_pool_name", "StringValue"))
  for number, name, wrapper in wrapped:
    message.field.add(name=name, number=number, label=field.LABEL_OPTIONAL,
                      type=field.TYPE_MESSAGE, type_name=f".google.protobuf.{wrapper}")
  message.field.add(name="allowed_batch_sizes", number=6, label=field.LABEL_REPEATED,
                    type=field.TYPE_INT64)
  message.field.add(name="pad_variable_length_inputs", number=7, label=field.LABEL_OPTIONAL,
                    type=field.TYPE_BOOL)
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  pool.Add(proto)
  return message_factory.GetMessageClass(
      pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def to_text(settings: BatchingSettings) -> str:
  """The `batching_parameters` text of `settings`, parsed back before it is returned."""
  message = batching_parameters_class()()
  message.max_batch_size.value = settings.max_batch_size
  message.batch_timeout_micros.value = settings.batch_timeout_micros
  message.max_enqueued_batches.value = settings.max_enqueued_batches
  message.num_batch_threads.value = settings.num_batch_threads
  message.allowed_batch_sizes.extend(settings.allowed_batch_sizes)
  text = ("# TF Serving BatchingParameters (text format) for every signature of the models in\n"
          "# models.config: tensorflow_model_server --enable_batching "
          "--batching_parameters_file=<this file>\n" + text_format.MessageToString(message))
  parse(text)
  return text


_REQUIRED_FIELDS = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                    "num_batch_threads")


def parse(text: str) -> BatchingSettings:
  """`BatchingSettings` of a batching_parameters text, which sets every field `to_text` writes
  (allowed_batch_sizes may be empty: no padding).

  Raises:
    ValueError: The text is not a BatchingParameters text proto, lacks one of those fields, or
      its values are invalid.
  """
  message = batching_parameters_class()()
  try:
    text_format.Parse(text, message)
  except text_format.ParseError as error:
    raise ValueError(f"not a TF Serving BatchingParameters text proto: {error}") from error
  missing = [name for name in _REQUIRED_FIELDS if not message.HasField(name)]
  if missing:
    raise ValueError(f"batching_parameters without {', '.join(missing)}: expected every one of "
                     f"{', '.join(_REQUIRED_FIELDS)} (as the export writes them)")
  values = {name: getattr(message, name).value for name in _REQUIRED_FIELDS}
  return BatchingSettings(**values, allowed_batch_sizes=tuple(message.allowed_batch_sizes))


def write(export_dir: str, settings: BatchingSettings) -> str:
  """Writes `<export_dir>/batching_parameters` atomically (0644); returns its path."""
  path = os.path.join(export_dir, BATCHING_PARAMETERS)
  files.write_atomic(path, to_text(settings))
  return path


def read(path: str) -> BatchingSettings:
  """`parse` of a file; ValueError names the file."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  try:
    return parse(text)
  except ValueError as error:
    raise ValueError(f"{path}: {error}") from error


# ----------------------------------------------------------------------------- in process


class QueueFullError(RuntimeError):
  """`max_enqueued_batches` batches of the request's signature are already waiting."""


class _Task:
  """One request in a batch: its inputs, frames, and its answer once the batch ran."""

  def __init__(self, inputs: dict, frames: int):
    self.inputs = inputs
    self.frames = frames
    self.outputs = None
    self.error = None
    self.done = threading.Event()

  def answer(self) -> dict:
    self.done.wait()
    if self.error is not None:
      raise self.error
    return self.outputs


class _Batch:
  def __init__(self):
    self.tasks: list[_Task] = []
    self.frames = 0
    self.ready = threading.Event()  # Full, or a request that does not fit arrived.


def batch_frames(inputs: dict) -> int | None:
  """The frames (dimension 0) all inputs share, or None when they disagree or one is a scalar."""
  sizes = {np.shape(value)[0] if np.ndim(value) else None for value in inputs.values()}
  return sizes.pop() if len(sizes) == 1 and None not in sizes else None


def call(function, inputs: dict) -> dict[str, np.ndarray]:
  """One unbatched call: numpy inputs -> numpy outputs."""
  outputs = function(**{key: tf.constant(value) for key, value in inputs.items()})
  return {key: np.asarray(value) for key, value in outputs.items()}


class Batcher:
  """Gathers concurrent calls of one function into batched calls (module docstring).

  Args:
    settings: BatchingSettings.

  Attributes:
    batch_sizes: Counter of the frames (before padding) of every batch run so far.
  """

  def __init__(self, settings: BatchingSettings):
    self.settings = settings
    self.batch_sizes = collections.Counter()
    self._lock = threading.Lock()
    self._open: dict = {}  # key -> the _Batch taking requests
    self._queued = collections.Counter()  # key -> batches formed and not yet running
    # Batches run on threads of their own, as TF Serving's: the batched tensors are allocated
    # by a few threads, not by every request thread (whose allocator arenas would each keep
    # batch-sized blocks).
    self._threads = concurrent.futures.ThreadPoolExecutor(settings.num_batch_threads,
                                                          thread_name_prefix="mf_tf_batch")

  def close(self) -> None:
    """Stops the batch threads once the batches given to them ran."""
    self._threads.shutdown()

  def run(self, key, function, inputs: dict) -> dict[str, np.ndarray]:
    """`call(function, inputs)`, batched with the concurrent calls of the same `key`.

    Args:
      key: Hashable: calls of one key run one function (model, version, signature).
      function: Keyword tensors -> dict of tensors, every one [frames, ...].
      inputs: Input name -> numpy array [frames, ...]; the same names for every call of `key`.

    Returns:
      Output name -> numpy array, this call's frames only.

    Raises:
      QueueFullError: `max_enqueued_batches` batches of `key` are waiting.
      tf.errors.OpError: The function failed on these inputs.
    """
    frames = batch_frames(inputs)
    if frames is None or frames > self.settings.max_batch_size:
      return call(function, inputs)  # Not batchable: run as it came.
    task = _Task(inputs, frames)
    with self._lock:
      batch = self._open.get(key)
      if batch is not None and batch.frames + frames > self.settings.max_batch_size:
        del self._open[key]  # Full for this request: it goes on without it.
        batch.ready.set()
        batch = None
      leader = batch is None
      if leader:
        if self._queued[key] >= self.settings.max_enqueued_batches:
          raise QueueFullError(f"{self._queued[key]} batches of {key} already wait for a "
                               f"thread (max_enqueued_batches="
                               f"{self.settings.max_enqueued_batches}); retry later")
        batch = self._open[key] = _Batch()
        self._queued[key] += 1
      batch.tasks.append(task)
      batch.frames += frames
      if batch.frames == self.settings.max_batch_size:
        del self._open[key]
        batch.ready.set()
    if leader:
      batch.ready.wait(self.settings.timeout_s)
      self._threads.submit(self._run_batch, key, function, batch)
    return task.answer()

  def _run_batch(self, key, function, batch: _Batch) -> None:
    """On a batch thread: closes the batch (it took requests until a thread was free), runs it."""
    with self._lock:
      if self._open.get(key) is batch:
        del self._open[key]
      self._queued[key] -= 1
      tasks = list(batch.tasks)
      self.batch_sizes[sum(task.frames for task in tasks)] += 1
    self._execute(function, tasks)

  def _execute(self, function, tasks: list[_Task]) -> None:
    """Runs the tasks as one call (padded), or one by one when that fails; answers each."""
    try:
      total = sum(task.frames for task in tasks)
      padded = self.settings.padded_size(total)
      inputs = {}
      for key in tasks[0].inputs:
        parts = [task.inputs[key] for task in tasks]
        if padded > total:  # Copies of a real frame: they pass the signature's input checks.
          parts.append(np.repeat(parts[0][:1], padded - total, axis=0))
        inputs[key] = np.concatenate(parts, axis=0)
      try:
        outputs = call(function, inputs) if len(tasks) > 1 or padded > total else None
      except (tf.errors.OpError, ValueError):
        outputs = None  # One bad request: each is run alone below and gets its own answer.
      if outputs is not None and all(np.ndim(value) and len(value) == padded
                                     for value in outputs.values()):
        start = 0
        for task in tasks:
          task.outputs = {key: value[start:start + task.frames]
                          for key, value in outputs.items()}
          start += task.frames
        return
      for task in tasks:
        try:
          task.outputs = call(function, task.inputs)
        except Exception as error:  # noqa: BLE001  (handed to the request's own thread)
          task.error = error
    except Exception as error:  # noqa: BLE001
      for task in tasks:
        if task.outputs is None and task.error is None:
          task.error = error
    finally:
      for task in tasks:
        task.done.set()
