"""The in-process server against hostile requests, TLS, and predict's errors.

Requests that declare gigabytes in a few bytes are refused from their declared shape, the
server's memory staying within MEMORY_BOUND_BYTES; the client and --mode=predict speak TLS
(certificates made with the `openssl` binary); --mode=predict turns gRPC failures into one
ValueError; the export refuses non-finite or diverged fusion parameters.
"""

import contextlib
import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import threading

import grpc
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from config_settings import batching_settings
from serving_test_helpers import (HEATMAP_SIZE, IMAGE_SIZE, NUM_JOINTS, NUM_VIEWS, distorted_rig,
                                  trained_like_fusion)
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from mf_tf.fusion.layers import MaterializedFusion
from mf_tf.modes import predict
from mf_tf.serving import client, export, request_limits, server

# What a refused request may add to the server's resident memory (the audit's request grew it by
# 2.2 GB). Protobuf parsing and gRPC buffers of these small messages stay far below.
MEMORY_BOUND_BYTES = 200 * 1024 * 1024
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def running(exported):
  with server.start_server(os.path.join(exported["dir"], "models.config")) as running_server:
    yield running_server


def _images(batch=1, seed=1):
  return np.random.default_rng(seed).integers(
      0, 256, (batch, NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)


def _direct(exported, images):
  function = tf.saved_model.load(exported["dense_path"]).signatures["serving_default"]
  return {key: value.numpy() for key, value in function(images=tf.constant(images)).items()}


def _declared(shape, dtype=tf.uint8, value=1, signature="serving_default", key="images",
              inputs=None):
  """A PredictRequest whose input declares `shape` with one value (a few dozen bytes)."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = "toy3"
  request.model_spec.signature_name = signature
  request.inputs[key].CopyFrom(tf.make_tensor_proto(value, dtype=dtype,
                                                    shape=[abs(size) for size in shape]))
  for dim, size in zip(request.inputs[key].tensor_shape.dim, shape):
    dim.size = size  # Negative sizes too, which make_tensor_proto refuses.
  for name, array in (inputs or {}).items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
  return request


def _rpc_error(address, request):
  with grpc.insecure_channel(address, options=server.GRPC_OPTIONS) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
      stub.Predict(request, timeout=60)
  return info.value


def _rss_bytes() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  raise OSError("no VmRSS in /proc/self/status")


@contextlib.contextmanager
def _peak_rss_growth():
  """Yields a dict whose "bytes" becomes the peak RSS growth of this process over the block.

  The server runs in this process; a sampler thread reads VmRSS every 2 ms, so a transient
  allocation (decoded, used, freed) is seen, not only what is left after.
  """
  baseline = _rss_bytes()
  peak = [baseline]
  done = threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], _rss_bytes())
      done.wait(0.002)

  sampler = threading.Thread(target=sample, daemon=True)
  sampler.start()
  result = {"bytes": 0}
  try:
    yield result
  finally:
    done.set()
    sampler.join()
    result["bytes"] = max(peak[0], _rss_bytes()) - baseline


HOSTILE = [
    # The audit's request: 70 bytes declaring uint8 [1, 4, 8000, 8000, 3] (768 MB) for a rig of
    # another view count.
    (dict(shape=[1, 4, 8000, 8000, 3]), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images' has shape [1, 4, 8000, 8000, 3], signature 'serving_default' of model "
     "'toy3' expects [batch <= 16, 3, 64, 64, 3]"),
    # The right view count, a huge image.
    (dict(shape=[1, NUM_VIEWS, 8000, 8000, 3]), grpc.StatusCode.INVALID_ARGUMENT,
     "has shape [1, 3, 8000, 8000, 3], signature 'serving_default' of model 'toy3' expects "
     "[batch <= 16, 3, 64, 64, 3]"),
    # The audit's batch-16 request (12.3 GB: the process was killed).
    (dict(shape=[16, 4, 8000, 8000, 3]), grpc.StatusCode.INVALID_ARGUMENT,
     "has shape [16, 4, 8000, 8000, 3]"),
    # Right frames, a huge batch.
    (dict(shape=[10 ** 6, NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3]),
     grpc.StatusCode.RESOURCE_EXHAUSTED, "input 'images' holds 1000000 frames (shape [1000000, 3, 64, 64, 3]), at most 16 per "
     "request"),
    # float32 of the float signature, and heatmaps with millions of joints.
    (dict(shape=[1, 4, 8000, 8000, 3], dtype=tf.float32, signature="serving_float32"),
     grpc.StatusCode.INVALID_ARGUMENT, "expects [batch <= 16, 3, 64, 64, 3]"),
    (dict(shape=[1, NUM_VIEWS, HEATMAP_SIZE, HEATMAP_SIZE, 10 ** 7], dtype=tf.float32,
          signature="heatmaps", key="heatmaps"), grpc.StatusCode.INVALID_ARGUMENT,
     f"input 'heatmaps' has shape [1, 3, 16, 16, 10000000], signature 'heatmaps' of model "
     f"'toy3' expects [batch <= 16, 3, 16, 16, {NUM_JOINTS}]"),
    # One of two inputs huge.
    (dict(shape=[1, NUM_VIEWS, 8000, 8000, NUM_JOINTS], dtype=tf.float32, signature="fuse_crops",
          key="crop_heatmaps", inputs={"crop_affines": np.tile(np.eye(3, dtype=np.float32),
                                                               (1, NUM_VIEWS, 1, 1))}),
     grpc.StatusCode.INVALID_ARGUMENT, "input 'crop_heatmaps' has shape [1, 3, 8000, 8000, 4]"),
    # A wrong dtype is refused before decoding too.
    (dict(shape=[1, 4, 8000, 8000, 3], dtype=tf.float32), grpc.StatusCode.INVALID_ARGUMENT,
     "input 'images' has dtype float32, signature 'serving_default' expects uint8"),
    # Sizes that are no sizes.
    (dict(shape=[-1, NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3]), grpc.StatusCode.INVALID_ARGUMENT,
     "declares shape [-1, 3, 64, 64, 3] (unknown rank or a negative size)"),
]


def test_huge_declared_shapes_are_refused_before_decoding(running, exported):
  growths = []
  for kwargs, code, message in HOSTILE:
    request = _declared(**kwargs)
    assert request.ByteSize() < 300  # Bytes that declare up to gigabytes.
    with _peak_rss_growth() as growth:
      error = _rpc_error(running.address, request)
    growths.append(growth["bytes"])
    assert growth["bytes"] < MEMORY_BOUND_BYTES, (kwargs["shape"], growth["bytes"])
    assert error.code() == code, (kwargs["shape"], error.details())
    assert message in error.details(), error.details()
  print(f"peak RSS growth per hostile request (MB): {[round(g / 2 ** 20, 1) for g in growths]}")
  # Still answering, with the answer of a direct call.
  images = _images(batch=2)
  got = client.predict(running.address, "toy3", images)
  for key, value in _direct(exported, images).items():
    np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5, err_msg=key)


def test_content_must_match_the_declared_shape(running, exported):
  shape = [1, NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3]
  count = int(np.prod(shape))
  short = _declared(shape)
  short.inputs["images"].ClearField("int_val")
  short.inputs["images"].tensor_content = b"\x07" * 10
  error = _rpc_error(running.address, short)
  assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert ("input 'images' declares shape [1, 3, 64, 64, 3] of uint8 (36864 bytes) but its "
          "tensor_content holds 10 bytes") in error.details(), error.details()
  extra = _declared(shape)
  extra.inputs["images"].int_val.extend([3] * count)  # count + 1 values.
  error = _rpc_error(running.address, extra)
  assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert f"declares shape [1, 3, 64, 64, 3] ({count} values) but its int_val holds {count + 1}" \
      in error.details(), error.details()
  misplaced = _declared(shape)  # A uint8 input decodes int_val; float_val would read as zeros.
  misplaced.inputs["images"].ClearField("int_val")
  misplaced.inputs["images"].float_val.append(3.0)
  error = _rpc_error(running.address, misplaced)
  assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
  assert "carries no values; expected tensor_content or int_val" in error.details()
  # One value fills the declared shape, as TensorFlow (and TF Serving) decode it.
  one = _declared(shape, value=77)
  with grpc.insecure_channel(running.address) as channel:
    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(one, timeout=60)
  want = _direct(exported, np.full(shape, 77, np.uint8))
  np.testing.assert_allclose(tf.make_ndarray(reply.outputs["joints_3d"]), want["joints_3d"],
                             rtol=1e-5, atol=1e-4)


def test_request_bytes_are_bounded(running, exported):
  # Twice the largest valid request (16 frames of the float32 signatures) plus 1 MiB: a few MB
  # for this rig, where any request was read up to 256 MiB before.
  largest = request_limits.largest_request_bytes(running.servicer.models, server.MAX_BATCH_FRAMES)
  crops = 16 * NUM_VIEWS * (export.CROP_HEATMAP_SIZE ** 2 * NUM_JOINTS + 9) * 4
  assert largest == crops
  limit = running.servicer.max_request_bytes
  assert limit == 2 * largest + 2 ** 20 < 16 * 2 ** 20
  request = _declared([1, NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3])
  request.inputs["images"].ClearField("int_val")
  request.inputs["images"].tensor_content = b"\0" * (limit + 1)
  error = _rpc_error(running.address, request)
  assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert "larger than max" in error.details(), error.details()
  # The valid request of the largest size still passes.
  heatmaps = np.random.default_rng(3).uniform(
      0, 1, (16, NUM_VIEWS, export.CROP_HEATMAP_SIZE, export.CROP_HEATMAP_SIZE, NUM_JOINTS))
  affines = np.tile(np.diag([0.2, 0.2, 1.0]), (16, NUM_VIEWS, 1, 1))
  got = client.predict_crops(running.address, "toy3", heatmaps, affines)
  assert got["joints_2d"].shape == (16, NUM_VIEWS, NUM_JOINTS, 2)


class _Aborted(Exception):
  pass


class _Context:
  """The servicer's side of a gRPC context: abort raises with the status."""

  def abort(self, code, details):
    raise _Aborted(code, details)


def test_decoded_bytes_are_bounded_without_an_export_record(running):
  model = running.servicer.models["toy3"]
  # A model without export record: only the signature's rank is known.
  bare = dataclasses.replace(model, input_shapes=request_limits.expected_shapes(model.signatures, None))
  assert bare.input_shapes["serving_default"]["images"].as_list() == [None] * 5
  servicer = server.PredictionServicer({"toy3": bare})
  assert servicer.max_request_bytes == server.MAX_MESSAGE_BYTES
  with _peak_rss_growth() as growth, pytest.raises(_Aborted) as info:
    servicer.Predict(_declared([1, 4, 8000, 8000, 3]), _Context())
  assert growth["bytes"] < MEMORY_BOUND_BYTES, growth
  code, details = info.value.args
  assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert (f"inputs {{'images': [1, 4, 8000, 8000, 3]}} declare 768000000 bytes, at most "
          f"{server.MAX_MESSAGE_BYTES} per request") in details
  small = server.PredictionServicer({"toy3": model}, max_request_bytes=50_000)
  with pytest.raises(_Aborted) as info:
    small.Predict(_declared([2, NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3]), _Context())
  assert info.value.args[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
  assert "declare 73728 bytes, at most 50000 per request" in info.value.args[1]


# ----------------------------------------------------------------------------- TLS


def _openssl(*args, cwd):
  subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
  """A CA, a server certificate for 127.0.0.1 / localhost and a client certificate (PEM)."""
  if shutil.which("openssl") is None:
    pytest.skip("no openssl binary to make test certificates")
  folder = tmp_path_factory.mktemp("tls")
  _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
           "/CN=mf_tf test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)
  (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
  for name, subject, extra in (("server", "/CN=localhost", ["-extfile", "server.ext"]),
                               ("client", "/CN=mf_tf test client", [])):
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", f"{name}.key",
             "-out", f"{name}.csr", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", *extra, cwd=folder)
  return {name: str(folder / name) for name in (
      "ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def _predict_config(export_dir=None):
  return ml_collections.ConfigDict({"image_size": IMAGE_SIZE, "predict": {"route": "image"},
                                    "export": {"client_timeout_s": 30.0, "dir": export_dir}})


def _image_files(folder, count=NUM_VIEWS):
  paths = []
  for view, image in enumerate(_images(seed=3)[0][:count]):
    path = os.path.join(folder, f"view{view}.png")
    tf.io.write_file(path, tf.io.encode_png(image))
    paths.append(path)
  return tuple(paths)


def test_tls_client_against_tls_server(exported, certificates, tmp_path):
  tls = server.ServerTls(cert=certificates["server.pem"], key=certificates["server.key"])
  with server.start_server(os.path.join(exported["dir"], "models.config"), tls=tls) as running:
    images = _images(batch=2)
    got = client.predict(running.address, "toy3", images,
                         tls=client.ClientTls(ca_cert=certificates["ca.pem"]))
    for key, value in _direct(exported, images).items():
      np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-5, err_msg=key)
    # A plaintext client gets no answer; --mode=predict says where and what to check.
    with pytest.raises(grpc.RpcError) as info:
      client.predict(running.address, "toy3", images, timeout=10)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    paths = _image_files(str(tmp_path))
    with pytest.raises(ValueError, match=(
        rf"no answer from TF Serving at --server={running.address} \(UNAVAILABLE: .*\); check "
        r"--server and that TF Serving runs there; a TLS server needs --tls_ca_cert")):
      predict.run(_predict_config(), str(tmp_path), server=running.address, rig="toy3",
                  images=paths)
    # The same through --mode=predict's TLS flags.
    result = predict.run(_predict_config(), str(tmp_path), server=running.address, rig="toy3",
                         images=paths, tls_ca_cert=certificates["ca.pem"])
    assert np.asarray(result["joints_3d_mm"]).shape == (NUM_JOINTS, 3)
    # A certificate the client does not trust.
    with pytest.raises(ValueError, match="with TLS, and the --tls_\\* certificate files"):
      predict.run(_predict_config(), str(tmp_path), server=running.address, rig="toy3",
                  images=paths, tls_ca_cert=certificates["client.pem"])


def test_mutual_tls(exported, certificates, tmp_path):
  tls = server.ServerTls(cert=certificates["server.pem"], key=certificates["server.key"],
                         client_ca=certificates["ca.pem"])
  with server.start_server(os.path.join(exported["dir"], "models.config"), tls=tls) as running:
    images = _images()
    mutual = client.ClientTls(ca_cert=certificates["ca.pem"], cert=certificates["client.pem"],
                              key=certificates["client.key"])
    got = client.predict(running.address, "toy3", images, tls=mutual)
    np.testing.assert_allclose(got["joints_3d"], _direct(exported, images)["joints_3d"],
                               rtol=1e-5, atol=1e-4)
    with pytest.raises(grpc.RpcError) as info:  # No client certificate.
      client.predict(running.address, "toy3", images, timeout=10,
                     tls=client.ClientTls(ca_cert=certificates["ca.pem"]))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    result = predict.run(_predict_config(), str(tmp_path), server=running.address, rig="toy3",
                         images=_image_files(str(tmp_path)), tls_ca_cert=certificates["ca.pem"],
                         tls_client_cert=certificates["client.pem"],
                         tls_client_key=certificates["client.key"])
    assert len(result["views"]) == NUM_VIEWS


def test_tls_files_are_checked(certificates, tmp_path):
  missing = str(tmp_path / "missing.pem")
  with pytest.raises(FileNotFoundError, match=rf"--tls_ca_cert={missing}: no such file"):
    predict.tls_options(missing, None, None, None)
  with pytest.raises(FileNotFoundError, match=rf"--tls_client_key={missing}: no such file"):
    predict.tls_options(certificates["ca.pem"], certificates["client.pem"], missing, None)
  with pytest.raises(ValueError, match="--tls_client_cert and --tls_client_key go together"):
    predict.tls_options(certificates["ca.pem"], certificates["client.pem"], None, None)
  with pytest.raises(FileNotFoundError, match=r"TLS CA certificate \(ca_cert\) file .* does not"):
    client.ClientTls(ca_cert=missing).credentials()
  with pytest.raises(ValueError, match="given together or not at all"):
    client.ClientTls(cert=certificates["client.pem"])
  with pytest.raises(FileNotFoundError, match=r"TLS server private key \(key\) file"):
    server.ServerTls(cert=certificates["server.pem"], key=missing).credentials()
  not_pem = tmp_path / "key.txt"
  not_pem.write_text("secret")
  with pytest.raises(ValueError, match="is not PEM"):
    server.ServerTls(cert=certificates["server.pem"], key=str(not_pem)).credentials()
  assert predict.tls_options(None, None, None, None) is None


# ----------------------------------------------------------------------------- --mode=predict


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def test_predict_without_a_server_is_one_error(tmp_path):
  address = f"127.0.0.1:{_free_port()}"
  with pytest.raises(ValueError, match=rf"no answer from TF Serving at --server={address} "
                     r"\(UNAVAILABLE: "):
    predict.run(_predict_config(), str(tmp_path), server=address, rig="toy3",
                images=_image_files(str(tmp_path)))


def test_predict_with_too_few_images_is_one_error(running, exported, tmp_path):
  two = _image_files(str(tmp_path), count=2)
  # With the export record at hand: refused before sending.
  with pytest.raises(ValueError, match=r"--images names 2 files; rig 'toy3' has 3 views"):
    predict.run(_predict_config(exported["dir"]), str(tmp_path), server=running.address,
                rig="toy3", images=two)
  # Without it: the server's answer, as one error.
  with pytest.raises(ValueError, match=(
      rf"TF Serving at --server={running.address} refused the request for rig 'toy3' "
      r"\(INVALID_ARGUMENT: input 'images' has shape \[1, 2, 64, 64, 3\]")):
    predict.run(_predict_config(), str(tmp_path), server=running.address, rig="toy3",
                images=two)


def test_predict_cli_without_a_server_prints_one_line(tmp_path):
  address = f"127.0.0.1:{_free_port()}"
  paths = _image_files(str(tmp_path))
  done = subprocess.run(
      [sys.executable, "-m", "mf_tf.main", "--mode=predict", f"--server={address}", "--rig=toy3",
       f"--images={','.join(paths)}", f"--workdir={tmp_path / 'work'}",
       f"--config.image_size={IMAGE_SIZE}", "--config.predict.route=image"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert done.returncode == 2, done.stderr
  assert "Traceback" not in done.stderr
  errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and f"no answer from TF Serving at --server={address}" in errors[0], \
      done.stderr


# ----------------------------------------------------------------------------- export


def test_export_refuses_non_finite_or_diverged_fusion(small_backbone, tmp_path):
  rig = distorted_rig()
  fusion = trained_like_fusion()
  dense = fusion.materialize()
  matrices = dense.matrices.numpy()
  broken = MaterializedFusion(NUM_VIEWS, HEATMAP_SIZE, matrices=matrices, name="fusion")
  matrices[1, 5, 7] = np.nan  # Past the layer's own check, as weights loaded from a file are.
  broken.matrices.assign(matrices)
  export_dir = tmp_path / "export"
  with pytest.raises(ValueError, match=r"fusion parameter 'matrices' of rig 'toy3' holds NaN or "
                     r"Inf \(1 of \d+ values\); refusing to serve it"):
    export.export_rig(small_backbone, broken, rig, str(export_dir), batching=batching_settings())
  assert not export_dir.exists()  # Refused before anything is written.
  # A diverged theta (the audit's outer_lr=1e9 run: |theta| = 2e9).
  theta = fusion.theta.numpy()
  theta[0, 0, 2] = 2e9
  fusion.theta.assign(theta)
  with pytest.raises(ValueError, match=r"fusion parameter 'theta' of rig 'toy3' reaches "
                     r"\|theta\| = 2e\+09, over 1000 heatmap sizes"):
    export.check_fusion_parameters(fusion, "toy3")
  theta[0, 0, 2] = np.inf
  fusion.theta.assign(theta)
  with pytest.raises(ValueError, match=r"fusion parameter 'theta' of rig 'toy3' holds NaN or Inf"):
    export.check_fusion_parameters(fusion, "toy3")
  export.check_fusion_parameters(trained_like_fusion(), "toy3")  # A sane one passes.
  export.check_fusion_parameters(dense, "toy3")
