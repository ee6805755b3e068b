"""Server-side batching: the batching_parameters file TF Serving reads, and the in-process batcher
(concurrent requests gathered, run once, answered as if alone)."""

import dataclasses
import os
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from config_settings import batching_settings
from google.protobuf import text_format
from serving_test_helpers import IMAGE_SIZE, NUM_JOINTS, NUM_VIEWS

from configs import default
from mf_tf.geometry import crops
from mf_tf.modes import export as export_mode
from mf_tf.serving import batching, client, export, server

CROP = export.CROP_HEATMAP_SIZE


# ----------------------------------------------------------------------------- the file


def test_export_writes_batching_parameters_that_tf_serving_parses(exported):
  path = os.path.join(exported["dir"], batching.BATCHING_PARAMETERS)
  with open(path) as f:
    text = f.read()
  message = batching.batching_parameters_class()()
  text_format.Parse(text, message)
  defaults = batching_settings()  # What the serving tests export with.
  assert (message.max_batch_size.value, message.batch_timeout_micros.value,
          message.max_enqueued_batches.value, message.num_batch_threads.value) == (
              defaults.max_batch_size, defaults.batch_timeout_micros,
              defaults.max_enqueued_batches, defaults.num_batch_threads)
  assert list(message.allowed_batch_sizes) == []
  assert "max_batch_size {\n  value: 16\n}" in text  # Int64Value wrappers, as the server's.
  assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
  # The field numbers and types of tensorflow_serving's session_bundle_config.proto.
  fields = {field.name: (field.number, field.message_type.full_name if field.message_type
                         else field.type) for field in message.DESCRIPTOR.fields}
  assert fields == {
      "max_batch_size": (1, "google.protobuf.Int64Value"),
      "batch_timeout_micros": (2, "google.protobuf.Int64Value"),
      "max_enqueued_batches": (3, "google.protobuf.Int64Value"),
      "num_batch_threads": (4, "google.protobuf.Int64Value"),
      "thread_pool_name": (5, "google.protobuf.StringValue"),
      "allowed_batch_sizes": (6, message.DESCRIPTOR.fields_by_name["allowed_batch_sizes"].type),
      "pad_variable_length_inputs": (7, message.DESCRIPTOR.fields_by_name[
          "pad_variable_length_inputs"].type)}
  assert batching.read(path) == defaults


def test_every_signature_batches_along_its_first_axis(exported):
  """TF Serving concatenates inputs and splits outputs along dimension 0 of every tensor."""
  loaded = tf.saved_model.load(exported["dense_path"])
  assert sorted(loaded.signatures) == sorted([
      export.SIGNATURE_IMAGES, export.SIGNATURE_IMAGES_FLOAT, export.SIGNATURE_HEATMAPS,
      export.SIGNATURE_CROPS])
  for name, function in loaded.signatures.items():
    _, inputs = function.structured_input_signature
    tensors = list(inputs.values()) + list(function.structured_outputs.values())
    for spec in tensors:
      assert spec.shape.rank >= 2 and spec.shape[0] is None, (name, spec)


def test_settings_and_text_are_checked():
  text = batching.to_text(batching_settings(max_batch_size=16, batch_timeout_micros=0,
                                            allowed_batch_sizes=(1, 4, 16)))
  assert batching.parse(text).allowed_batch_sizes == (1, 4, 16)
  assert "allowed_batch_sizes: 4" in text
  with pytest.raises(ValueError, match=r"allowed_batch_sizes=\[1, 4\], expected increasing sizes "
                     r">= 1 ending at max_batch_size=16"):
    batching_settings(max_batch_size=16, allowed_batch_sizes=(1, 4))
  with pytest.raises(ValueError, match="num_batch_threads=0, expected an integer >= 1"):
    batching_settings(num_batch_threads=0)
  with pytest.raises(ValueError, match="not a TF Serving BatchingParameters text proto"):
    batching.parse("max_batch_size: 16")  # A bare value where the server wants a wrapper.
  with pytest.raises(ValueError, match="batching_parameters without batch_timeout_micros, "
                     "num_batch_threads: expected every one of"):
    batching.parse("max_batch_size { value: 16 }\nmax_enqueued_batches { value: 16 }")


def test_export_mode_reads_config_export_batching():
  config = default.get_config()
  read = export_mode.batching_settings(config)
  assert read == batching.BatchingSettings(max_batch_size=16, batch_timeout_micros=2000,
                                           max_enqueued_batches=16, num_batch_threads=4,
                                           allowed_batch_sizes=())
  config.export.batching.update(allowed_batch_sizes="1, 4,16", num_batch_threads=8,
                                batch_timeout_micros=10, max_enqueued_batches=3)
  assert export_mode.batching_settings(config) == dataclasses.replace(
      read, num_batch_threads=8, allowed_batch_sizes=(1, 4, 16), batch_timeout_micros=10,
      max_enqueued_batches=3)
  config.export.batching.update(max_batch_size=8, allowed_batch_sizes="")
  with pytest.raises(ValueError, match=r"max_batch_size=8, expected >= 16"):
    export_mode.batching_settings(config)
  config.export.batching.update(max_batch_size=16, allowed_batch_sizes="4,8")
  with pytest.raises(ValueError, match=r"config.export.batching: batching allowed_batch_sizes"):
    export_mode.batching_settings(config)


# ----------------------------------------------------------------------------- the batcher


class _Recorder:
  """y = 2 x and the per-frame sum, refusing negative inputs; records every call's frames."""

  def __init__(self, gate=None):
    self.frames = []
    self.gate = gate

  def __call__(self, x):
    self.frames.append(int(x.shape[0]))
    if self.gate is not None:
      self.gate.wait(10)
    tf.debugging.assert_non_negative(x, message="x must be >= 0")
    return {"y": 2.0 * x, "total": tf.reduce_sum(x, axis=1)}


def _concurrently(count, function):
  """function(i) for i < count, started together on `count` threads; (answers, errors)."""
  answers, errors = [None] * count, [None] * count
  barrier = threading.Barrier(count)

  def one(index):
    barrier.wait()
    try:
      answers[index] = function(index)
    except Exception as error:  # noqa: BLE001  (checked by the test)
      errors[index] = error

  threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join(30)
  return answers, errors


def test_concurrent_calls_run_once_and_get_their_own_answers():
  recorder = _Recorder()
  batcher = batching.Batcher(batching_settings(max_batch_size=16, batch_timeout_micros=300_000))
  inputs = [np.full((1 + i % 2, 3), float(i), np.float32) for i in range(6)]  # 9 frames.
  answers, errors = _concurrently(6, lambda i: batcher.run("m", recorder, {"x": inputs[i]}))
  assert errors == [None] * 6
  assert recorder.frames == [9] and batcher.batch_sizes == {9: 1}
  for x, answer in zip(inputs, answers):
    np.testing.assert_array_equal(answer["y"], 2.0 * x)
    np.testing.assert_array_equal(answer["total"], x.sum(axis=1))


def test_full_batches_run_at_once_and_padding_repeats_a_real_frame():
  recorder = _Recorder()
  batcher = batching.Batcher(batching_settings(
      max_batch_size=4, batch_timeout_micros=2_000_000, allowed_batch_sizes=(2, 4)))
  started = time.perf_counter()
  _, errors = _concurrently(4, lambda i: batcher.run("m", recorder, {"x": np.ones((1, 2))}))
  assert errors == [None] * 4 and recorder.frames == [4]
  assert time.perf_counter() - started < 1.5  # Full: it did not wait out the 2 s timeout.
  # 3 frames run as 4 (the next allowed size); the padding frame's answer goes nowhere.
  answers, _ = _concurrently(3, lambda i: batcher.run(
      "m", recorder, {"x": np.full((1, 2), i, np.float32)}))
  assert recorder.frames[1:] == [4] and batcher.batch_sizes == {4: 1, 3: 1}
  assert sorted(float(a["total"][0]) for a in answers) == [0.0, 2.0, 4.0]


def test_a_bad_request_fails_alone():
  recorder = _Recorder()
  batcher = batching.Batcher(batching_settings(batch_timeout_micros=300_000))
  inputs = [np.full((1, 3), -1.0 if i == 2 else float(i), np.float32) for i in range(4)]
  answers, errors = _concurrently(4, lambda i: batcher.run("m", recorder, {"x": inputs[i]}))
  assert isinstance(errors[2], tf.errors.InvalidArgumentError)
  assert "x must be >= 0" in errors[2].message
  for i in (0, 1, 3):
    assert errors[i] is None
    np.testing.assert_array_equal(answers[i]["y"], 2.0 * inputs[i])
  assert recorder.frames[0] == 4  # Tried together first, then one by one.


def test_a_full_queue_refuses_the_request():
  gate = threading.Event()
  recorder = _Recorder(gate)
  batcher = batching.Batcher(batching_settings(
      max_batch_size=1, batch_timeout_micros=0, max_enqueued_batches=1, num_batch_threads=1))
  x = {"x": np.ones((1, 2), np.float32)}
  first = threading.Thread(target=batcher.run, args=("m", recorder, x))
  first.start()  # Runs, holding the only thread until the gate opens.
  while not recorder.frames:
    time.sleep(0.01)
  second = threading.Thread(target=batcher.run, args=("m", recorder, x))
  second.start()  # Waits for the thread: the one queued batch.
  while batcher._queued["m"] < 1:  # pylint: disable=protected-access
    time.sleep(0.01)
  with pytest.raises(batching.QueueFullError, match="max_enqueued_batches=1"):
    batcher.run("m", recorder, x)
  other = _Recorder()  # Another signature has a queue of its own (and waits for the thread).
  third = threading.Thread(target=batcher.run, args=("other", other, x))
  third.start()
  while batcher._queued["other"] < 1:  # pylint: disable=protected-access
    time.sleep(0.01)
  gate.set()
  for thread in (first, second, third):
    thread.join(10)
  assert recorder.frames == [1, 1] and other.frames == [1]
  batcher.close()


# ----------------------------------------------------------------------------- over gRPC


def _crop_inputs(index):
  rng = np.random.default_rng(100 + index)
  frames = 1 + index % 2
  heatmaps = rng.uniform(0, 1, (frames, NUM_VIEWS, CROP, CROP, NUM_JOINTS)).astype(np.float32)
  affines = np.stack([crops.roi_affine([320.0 + 10 * index, 240.0], 300.0, 0.2 * view, CROP)
                      for view in range(NUM_VIEWS)])
  return heatmaps, np.broadcast_to(affines, (frames, NUM_VIEWS, 3, 3)).astype(np.float32)


def _images(index):
  rng = np.random.default_rng(200 + index)
  return rng.integers(0, 256, (1, NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)


def test_concurrent_batched_requests_equal_direct_calls(exported):
  # A long timeout: on a loaded machine the 12 requests still meet in a few batches.
  settings = batching_settings(batch_timeout_micros=1_000_000, num_batch_threads=2)
  signatures = tf.saved_model.load(exported["dense_path"]).signatures
  count = 6
  with server.start_server(os.path.join(exported["dir"], "models.config"),
                           batching=settings) as running:
    assert running.servicer.batcher.settings == settings

    def request(index):
      if index < count:
        heatmaps, affines = _crop_inputs(index)
        return client.predict_crops(running.address, "toy3", heatmaps, affines)
      return client.predict(running.address, "toy3", _images(index))

    answers, errors = _concurrently(2 * count, request)
    assert errors == [None] * (2 * count), errors
    sizes = running.servicer.batcher.batch_sizes
    assert max(sizes) > 2, sizes  # Requests were gathered (9 crop frames, 6 image frames).
  # Measured: up to 4e-6 in heatmaps and scores, 6e-5 px in keypoints (float32 pixels of a
  # 640 px image) and 0.015 mm in 3D (a DLT of random heatmaps' peaks, far from each other: the
  # least squares amplify the rounding): the backbone's kernels and the batched SVD round a batch
  # of 6 differently from a batch of 1.
  tolerances = {"joints_3d": 0.1}
  for index, answer in enumerate(answers):
    if index < count:
      heatmaps, affines = _crop_inputs(index)
      direct = signatures["fuse_crops"](crop_heatmaps=tf.constant(heatmaps),
                                        crop_affines=tf.constant(affines))
    else:
      direct = signatures["serving_default"](images=tf.constant(_images(index)))
    assert set(answer) == set(direct)
    for key, value in direct.items():
      np.testing.assert_allclose(answer[key], value.numpy(), rtol=0,
                                 atol=tolerances.get(key, 2e-4),
                                 err_msg=f"request {index}: {key}")


def test_batching_true_reads_the_file_beside_models_config(tmp_path):
  path = str(tmp_path / "models.config")
  with pytest.raises(FileNotFoundError, match="batching=True but there is no .*parameters"):
    server.batching_settings(path, True)  # No file.
  chosen = batching_settings(max_batch_size=32, batch_timeout_micros=500, num_batch_threads=2,
                             allowed_batch_sizes=(8, 32))
  batching.write(str(tmp_path), chosen)
  assert server.batching_settings(path, True) == chosen
  assert server.batching_settings(path, str(tmp_path / batching.BATCHING_PARAMETERS)) == chosen
  assert server.batching_settings(path, None) is None
  assert server.batching_settings(path, False) is None
