"""The stock TF Serving gRPC stub against the in-process PredictionService and exported rigs."""

import json
import os

import grpc
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from serving_test_helpers import HEATMAP_SIZE, IMAGE_SIZE, NUM_JOINTS, NUM_VIEWS
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from mf_tf.geometry import crops
from mf_tf.modes import predict
from mf_tf.serving import client, export, server


@pytest.fixture(scope="module")
def running(exported):
  with server.start_server(os.path.join(exported["dir"], "models.config")) as running_server:
    yield running_server


def _images(batch=None, seed=1):
  rng = np.random.default_rng(seed)
  shape = (NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3) if batch is None else (
      batch, NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3)
  return rng.integers(0, 256, shape).astype(np.uint8)


def test_server_loads_latest_versions(running):
  assert {name: model.version for name, model in running.servicer.models.items()} == {
      "toy3": 1, "toy3_sparse": 1}


@pytest.mark.parametrize("rig_name", ["toy3", "toy3_sparse"])
def test_predict_matches_direct_savedmodel_call(running, exported, rig_name):
  images = _images(batch=2)
  got = client.predict(running.address, rig_name, images)
  path = exported["dense_path" if rig_name == "toy3" else "sparse_path"]
  want = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
  assert set(got) == set(want)
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-5, atol=1e-5, err_msg=key)
  # One frame without a batch axis comes back without one.
  single = client.predict(running.address, rig_name, images[0])
  assert single["keypoints_image"].shape == (NUM_VIEWS, NUM_JOINTS, 2)
  assert single["joints_3d"].shape == (NUM_JOINTS, 3)
  # Batch 1 and batch 2 run different kernel tilings: equal up to float rounding.
  np.testing.assert_allclose(single["keypoints_heatmap"], got["keypoints_heatmap"][0], atol=0.02)


def test_heatmaps_signature_and_output_filter(running):
  heatmaps = np.random.default_rng(2).uniform(
      0, 1, (NUM_VIEWS, HEATMAP_SIZE, HEATMAP_SIZE, NUM_JOINTS)).astype(np.float32)
  got = client.predict(running.address, "toy3", heatmaps, signature="heatmaps",
                       output_filter=["keypoints_heatmap", "scores"])
  assert sorted(got) == ["keypoints_heatmap", "scores"]
  assert got["keypoints_heatmap"].shape == (NUM_VIEWS, NUM_JOINTS, 2)


def test_fuse_crops_signature_over_grpc(running):
  crop = export.CROP_HEATMAP_SIZE
  rng = np.random.default_rng(5)
  heatmaps = rng.uniform(0, 1, (2, NUM_VIEWS, crop, crop, NUM_JOINTS)).astype(np.float32)
  # Upright 300 px crops around each image centre (640 x 480), rotated a little per view.
  affines = np.stack([crops.roi_affine([320.0, 240.0], 300.0, 0.2 * view, crop)
                      for view in range(NUM_VIEWS)])
  affines = np.broadcast_to(affines, (2, NUM_VIEWS, 3, 3)).astype(np.float32)
  request = _raw_request(signature="fuse_crops",
                         inputs={"crop_heatmaps": heatmaps, "crop_affines": affines})
  with grpc.insecure_channel(running.address) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    reply = stub.Predict(request, timeout=60)
  got = {key: tf.make_ndarray(proto) for key, proto in reply.outputs.items()}
  assert {key: value.shape for key, value in got.items()} == {
      "joints_2d": (2, NUM_VIEWS, NUM_JOINTS, 2), "scores": (2, NUM_VIEWS, NUM_JOINTS),
      "joints_3d": (2, NUM_JOINTS, 3)}
  assert all(np.all(np.isfinite(value)) for value in got.values())
  # The client sends the same request; one frame without its batch axis gives the same answer.
  by_client = client.predict_crops(running.address, "toy3", heatmaps, affines)
  for key, value in got.items():
    np.testing.assert_allclose(by_client[key], value, rtol=1e-6, atol=1e-6)
  single = client.predict_crops(running.address, "toy3", heatmaps[1], affines[1])
  np.testing.assert_allclose(single["joints_2d"], got["joints_2d"][1], rtol=1e-5, atol=1e-4)
  with pytest.raises(ValueError, match=r"crop_affines has shape \(3, 3\), expected"):
    client.predict_crops(running.address, "toy3", heatmaps[1], affines[1, 0])


def _raw_request(rig="toy3", signature="serving_default", inputs=None):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = rig
  request.model_spec.signature_name = signature
  for key, value in (inputs if inputs is not None else {"images": _images(1)}).items():
    request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
  return request


@pytest.mark.parametrize("request_kwargs, code, message", [
    ({"rig": "nope"}, grpc.StatusCode.NOT_FOUND, "unknown model (rig) 'nope'"),
    ({"signature": "classify"}, grpc.StatusCode.NOT_FOUND, "no signature 'classify'"),
    ({"inputs": {"images": np.zeros((1, 2, 64, 64, 3), np.uint8)}},
     grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images' has shape [1, 2, 64, 64, 3], signature 'serving_default' of model 'toy3' "
     "expects [batch <= 16, 3, 64, 64, 3]"),
    ({"inputs": {"images": np.zeros((1, 3, 48, 48, 3), np.uint8)}},
     grpc.StatusCode.INVALID_ARGUMENT, "has shape [1, 3, 48, 48, 3], signature"),
    ({"inputs": {"images": np.zeros((1, 3, 64, 64, 3), np.float32)}},
     grpc.StatusCode.INVALID_ARGUMENT, "dtype float32, signature 'serving_default' expects uint8"),
    ({"inputs": {"images": np.zeros((3, 64, 64, 3), np.uint8)}},
     grpc.StatusCode.INVALID_ARGUMENT, "has shape [3, 64, 64, 3]"),
    ({"inputs": {"pixels": np.zeros((1, 3, 64, 64, 3), np.uint8)}},
     grpc.StatusCode.INVALID_ARGUMENT, "takes inputs ['images'], got ['pixels']"),
    ({"signature": "serving_float32",
      "inputs": {"images": np.full((1, 3, 64, 64, 3), -3.0, np.float32)}},
     grpc.StatusCode.INVALID_ARGUMENT, "in [0, 255]; got min] [-3]"),
    ({"signature": "heatmaps",
      "inputs": {"heatmaps": np.full((1, 3, 16, 16, 4), np.nan, np.float32)}},
     grpc.StatusCode.INVALID_ARGUMENT, "heatmaps hold NaN or Inf"),
])
def test_bad_requests_get_clear_status(running, request_kwargs, code, message):
  request = _raw_request(**request_kwargs)
  with grpc.insecure_channel(running.address) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
      stub.Predict(request, timeout=60)
  assert info.value.code() == code
  assert message in info.value.details(), info.value.details()
  # The server is still up and answers a good request.
  assert client.predict(running.address, "toy3", _images())["scores"].shape == (
      NUM_VIEWS, NUM_JOINTS)


def test_unknown_version_is_not_found(running):
  with pytest.raises(grpc.RpcError) as info:
    client.predict(running.address, "toy3", _images(), version=7)
  assert info.value.code() == grpc.StatusCode.NOT_FOUND
  assert "version 7 is not loaded; loaded version: 1" in info.value.details()


def test_predict_mode_writes_keypoints_json(running, tmp_path):
  paths = []
  for view, image in enumerate(_images(seed=3)):
    # Whole camera frames at their own size: the client resizes them to the model input.
    frame = tf.image.resize(image, [120, 160]).numpy().astype(np.uint8)
    path = str(tmp_path / f"view{view}.png")
    tf.io.write_file(path, tf.io.encode_png(frame))
    paths.append(path)
  config = ml_collections.ConfigDict({"image_size": IMAGE_SIZE, "predict": {"route": "image"},
                                      "export": {"client_timeout_s": 60.0}})
  predict.run(config, str(tmp_path), server=running.address, rig="toy3", images=tuple(paths))
  with open(tmp_path / "predict" / "toy3.json") as f:
    result = json.load(f)
  assert [view["image"] for view in result["views"]] == paths
  assert np.asarray(result["views"][0]["keypoints_image"]).shape == (NUM_JOINTS, 2)
  assert np.asarray(result["joints_3d_mm"]).shape == (NUM_JOINTS, 3)


def test_predict_mode_resizes_to_the_served_image_size(running, exported, tmp_path):
  paths = []
  for view, image in enumerate(_images(seed=4)):
    path = str(tmp_path / f"view{view}.png")
    tf.io.write_file(path, tf.io.encode_png(tf.image.resize(image, [90, 120]).numpy().astype(
        np.uint8)))
    paths.append(path)
  # Another image size than the served model's 64 px: the export record decides.
  config = ml_collections.ConfigDict({"image_size": IMAGE_SIZE // 2, "predict": {
      "route": "image"}, "export": {"client_timeout_s": 60.0, "dir": exported["dir"]}})
  assert client.served_image_size(exported["dir"], "toy3") == IMAGE_SIZE
  predict.run(config, str(tmp_path), server=running.address, rig="toy3", images=tuple(paths))
  with open(tmp_path / "predict" / "toy3.json") as f:
    result = json.load(f)
  assert np.asarray(result["views"][2]["keypoints_image"]).shape == (NUM_JOINTS, 2)


def _call(running, request):
  with grpc.insecure_channel(running.address) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
      stub.Predict(request, timeout=60)
  return info.value


def test_declared_shape_without_data_is_invalid(running):
  request = _raw_request()
  request.inputs["images"].ClearField("tensor_content")  # Decoded as all-zero images before.
  assert list(request.inputs["images"].tensor_shape.dim)
  error = _call(running, request)
  assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert ("input 'images' declares shape [1, 3, 64, 64, 3] but carries no values"
          in error.details()), error.details()


@pytest.mark.parametrize("with_data", [True, False])
def test_batch_over_the_limit_is_refused_before_any_work(running, with_data):
  frames = server.MAX_BATCH_FRAMES + 1
  request = _raw_request(inputs={"images": _images(frames)})
  if not with_data:  # The declared shape alone is enough: refused before decoding.
    request.inputs["images"].ClearField("tensor_content")
  error = _call(running, request)
  assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert f"input 'images' holds {frames} frames" in error.details(), error.details()
  assert f"at most {server.MAX_BATCH_FRAMES} per request" in error.details()
