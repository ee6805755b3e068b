"""TF Serving gRPC client for the exported per-rig models (--mode=predict: `mf_tf.modes.predict`).

One image per view, in the rig's camera order, each the camera's whole frame: it is resized
(anisotropically) to the served model's S x S input, the same convention as the heatmaps. S is
read from the served model's export record (`assets.extra/export_config.json` of its latest
version under `config.export.dir`, default `<workdir>/export`); the exported signatures declare
any image size (the size is checked inside the graph, with a message naming it), so TF Serving's
GetModelMetadata cannot give it. Without that record, S is `config.image_size`. Prints the
keypoints (image pixels of each camera), scores and, for a calibrated rig, the 3D joints (mm) as
JSON and writes them to `<workdir>/predict/<rig>.json`.

Real camera frames take the other route: BlazePose runs on the client and only the person-crop
heatmaps and their crop geometry travel, to the "fuse_crops" signature (`ServedCropFusion`, the
crop fusion of `mf_tf.reconstruct.people` done by the served rig; --mode=predict with
config.predict.route=crops).

Plaintext by default; pass `tls=ClientTls(ca_cert=...)` to reach a server over TLS
(`grpc.ssl_channel_credentials`), with `cert` and `key` for mutual TLS.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from mf_tf.geometry import crops
from mf_tf.geometry.rig import Rig
from mf_tf.serving import model_config
from mf_tf.serving.server import GRPC_OPTIONS
from mf_tf.serving.server import MAX_BATCH_FRAMES
from mf_tf.serving.server import read_pem

CROP_SIGNATURE = "fuse_crops"


@dataclasses.dataclass(frozen=True)
class ClientTls:
  """PEM files of a TLS connection to the server (`grpc.ssl_channel_credentials`).

  Attributes:
    ca_cert: CA certificate(s) that signed the server's certificate; None: the system's roots.
    cert: This client's certificate chain (mutual TLS); given with `key`.
    key: Its private key.
    server_name: Name to check the server's certificate against when it differs from the host
      of the address (e.g. an IP address with a certificate issued to a host name).
  """

  ca_cert: str | None = None
  cert: str | None = None
  key: str | None = None
  server_name: str | None = None

  def __post_init__(self):
    if (self.cert is None) != (self.key is None):
      raise ValueError(f"TLS client certificate (cert={self.cert!r}) and private key "
                       f"(key={self.key!r}) are given together or not at all")

  def credentials(self) -> grpc.ChannelCredentials:
    """Reads the files; FileNotFoundError names the missing one."""
    def read(path, what):
      return None if path is None else read_pem(path, what)

    return grpc.ssl_channel_credentials(
        root_certificates=read(self.ca_cert, "CA certificate (ca_cert)"),
        private_key=read(self.key, "client private key (key)"),
        certificate_chain=read(self.cert, "client certificate (cert)"))


def open_channel(server: str, tls: ClientTls | None = None) -> grpc.Channel:
  """A gRPC channel to "HOST:PORT": plaintext, or TLS with `tls`."""
  if tls is None:
    return grpc.insecure_channel(server, options=GRPC_OPTIONS)
  options = GRPC_OPTIONS
  if tls.server_name:
    options += (("grpc.ssl_target_name_override", tls.server_name),)
  return grpc.secure_channel(server, tls.credentials(), options=options)


# Signature name -> its single input name (see mf_tf/serving/export.py).
SIGNATURE_INPUTS = {
    "serving_default": "images",
    "serving_float32": "images",
    "heatmaps": "heatmaps",
}


def predict(server: str, rig_name: str, images, signature: str = "serving_default",
            timeout: float = 60.0, output_filter=None, version: int | None = None,
            tls: ClientTls | None = None) -> dict[str, np.ndarray]:
  """Sends one Predict request to a TF Serving gRPC endpoint.

  Args:
    server: "HOST:PORT" of the gRPC endpoint (TF Serving's default port is 8500).
    rig_name: Served model name (the rig's name).
    images: [V, S, S, 3] or [B, V, S, S, 3] views in rig order: uint8 for "serving_default",
      float32 in [0, 255] for "serving_float32"; heatmaps [V, H, W, J] or [B, V, H, W, J]
      float32 for "heatmaps".
    signature: Signature name.
    timeout: Seconds before the call fails with DEADLINE_EXCEEDED.
    output_filter: Optional output names to return (all when None).
    version: Optional model version (the latest loaded when None).
    tls: Connect over TLS with these files; None: plaintext.

  Returns:
    Output name -> numpy array. When `images` had no batch dimension, neither do the outputs.

  Raises:
    grpc.RpcError: The server rejected the request or could not be reached; `.code()` and
      `.details()` say why.
    FileNotFoundError: A TLS file does not exist.
  """
  array = np.asarray(images)
  unbatched = array.ndim == 4
  inputs = {SIGNATURE_INPUTS.get(signature, "images"): array[None] if unbatched else array}
  return _predict(server, rig_name, signature, inputs, unbatched, timeout, output_filter, version,
                  tls)


def predict_crops(server: str, rig_name: str, crop_heatmaps, crop_affines, timeout: float = 60.0,
                  output_filter=None, version: int | None = None,
                  tls: ClientTls | None = None) -> dict[str, np.ndarray]:
  """Sends one request to the "fuse_crops" signature (person crops, exact per-frame geometry).

  Args:
    server: "HOST:PORT" of the gRPC endpoint.
    rig_name: Served model name (the rig's name).
    crop_heatmaps: [V, C, C, J] or [B, V, C, C, J] float32 heatmaps of one person crop per view
      (C = 64, e.g. `mf_tf.models.blazepose.BlazePose.estimate` output).
    crop_affines: [V, 3, 3] or [B, V, 3, 3] float32, undistorted image px -> crop heatmap px.
    timeout, output_filter, version, tls: As `predict`.

  Returns:
    "joints_2d" [(B,) V, J, 2] image pixels, "scores" [(B,) V, J] and, for a calibrated rig,
    "joints_3d" [(B,) J, 3] mm (see `mf_tf.serving.export`).

  Raises:
    ValueError: The two inputs disagree on batch or view count.
    grpc.RpcError: The server rejected the request.
  """
  heatmaps = np.asarray(crop_heatmaps, np.float32)
  affines = np.asarray(crop_affines, np.float32)
  unbatched = heatmaps.ndim == 4
  if unbatched:
    heatmaps, affines = heatmaps[None], affines[None]
  if affines.ndim != 4 or affines.shape[-2:] != (3, 3) or affines.shape[:2] != heatmaps.shape[:2]:
    raise ValueError(f"crop_affines has shape {np.shape(crop_affines)}, expected [(B,) V, 3, 3] "
                     f"matching crop_heatmaps {np.shape(crop_heatmaps)}")
  return _predict(server, rig_name, "fuse_crops",
                  {"crop_heatmaps": heatmaps, "crop_affines": affines}, unbatched, timeout,
                  output_filter, version, tls)


def predict_request(rig_name: str, signature: str, inputs: dict, output_filter=None,
                    version: int | None = None) -> predict_pb2.PredictRequest:
  """A PredictRequest for `signature` of `rig_name` with `inputs` (name -> array)."""
  request = predict_pb2.PredictRequest()
  request.model_spec.name = rig_name
  request.model_spec.signature_name = signature
  if version is not None:
    request.model_spec.version.value = int(version)
  for name, value in inputs.items():
    request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
  if output_filter:
    request.output_filter.extend(output_filter)
  return request


def response_arrays(response: predict_pb2.PredictResponse) -> dict[str, np.ndarray]:
  """Output name -> numpy array of a PredictResponse."""
  return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def _predict(server, rig_name, signature, inputs, unbatched, timeout, output_filter, version,
             tls=None):
  """One Predict call with `inputs` (name -> batched array); drops the batch when `unbatched`."""
  request = predict_request(rig_name, signature, inputs, output_filter, version)
  with open_channel(server, tls) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(request, timeout=timeout)
  outputs = response_arrays(response)
  if unbatched:
    outputs = {key: value[0] for key, value in outputs.items()}
  return outputs


# ----------------------------------------------------------------------------- person crops


def placeholder_affine(camera, crop_size: int) -> np.ndarray:
  """[3, 3] a crop covering the whole (undistorted) image of `camera`: the geometry sent for a
  view that does not see the person (its heatmaps are zero, so it sends nothing)."""
  width, height = float(camera.width), float(camera.height)
  return crops.roi_affine([(width - 1) / 2, (height - 1) / 2], max(width, height), 0.0,
                          crop_size)


def crop_fusion_frames(heatmaps, affines, slots, source_mask, num_views: int,
                       fill_affines) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """The fuse_crops frames that fuse one person exactly as `people.fuse_person` does.

  The served signature fuses every view of the rig (V slots) with every other (paper Eq. 1,
  `mf_tf.fusion.epipolar_fusion`): fused_v = h_v + sum_u M_uv(h_u), linear in each source h_u.
  A person is seen by Vp <= V views, in slots `slots`; the other slots hold zero heatmaps (they
  send nothing) under `fill_affines`. `people.fuse_person` sends only each view's confident
  joints (source_mask) but keeps every joint of the view's own heatmap:
  out_v = h_v + sum_u M_uv(m_u h_u). Frame 0 carries m_u h_u in every slot, which is exact for
  each view whose mask is complete; each view p with a masked joint gets a frame of its own,
  frame 0 with h_p in its slot.

  Args:
    heatmaps: [Vp, C, C, J] crop heatmaps of the person's views.
    affines: [Vp, 3, 3] undistorted image px -> crop heatmap px.
    slots: [Vp] distinct rig view index of each.
    source_mask: [Vp, J] bool, the heatmaps that may be fused into other views; None: all.
    num_views: V, the rig's views.
    fill_affines: [V, 3, 3] crop geometry of the slots the person is not in (invertible).

  Returns:
    crop_heatmaps [B, V, C, C, J] float32, crop_affines [B, V, 3, 3] float32 (B = 1 + the views
    with a masked joint), and frame [Vp] int: the frame whose slot slots[p] answers for view p.
  """
  heatmaps = np.asarray(heatmaps, np.float32)
  slots = np.asarray(slots, np.int64)
  if heatmaps.ndim != 4 or len(slots) != len(heatmaps) or len(set(slots.tolist())) != len(slots):
    raise ValueError(f"heatmaps {heatmaps.shape} and slots {slots.tolist()}: expected [Vp, C, C, "
                     "J] heatmaps and one distinct rig view per heatmap")
  if slots.min(initial=0) < 0 or slots.max(initial=0) >= num_views:
    raise ValueError(f"slots {slots.tolist()} outside the rig's {num_views} views")
  mask = (np.ones((heatmaps.shape[0], heatmaps.shape[3]), bool) if source_mask is None
          else np.asarray(source_mask, bool))
  sources = heatmaps * mask[:, None, None, :]
  frame0 = np.zeros((num_views,) + heatmaps.shape[1:], np.float32)
  frame0[slots] = sources
  geometry = np.array(fill_affines, np.float32)
  geometry[slots] = np.asarray(affines, np.float32)
  frames, frame = [frame0], np.zeros(len(slots), np.int64)
  for view in np.flatnonzero(~mask.all(axis=1)):
    own = frame0.copy()
    own[slots[view]] = heatmaps[view]
    frame[view] = len(frames)
    frames.append(own)
  return (np.stack(frames), np.broadcast_to(geometry, (len(frames),) + geometry.shape).copy(),
          frame)


class ServedCropFusion:
  """One person's crop fusion and decoding by a served rig: a `people.CropFusion`.

  Sends each person to the rig's fuse_crops signature (`crop_fusion_frames`) and reads the
  fused joints, in raw image pixels, from its `joints_2d`; the result equals
  `people.fuse_and_decode` with the served rig's line settings (within 1e-3 px: the crop
  geometry travels as float32). One gRPC channel serves every call; calls may come from several
  threads.

  Args:
    server: "HOST:PORT" of the gRPC endpoint.
    rig: The served rig (its name is the model name; its cameras the slots, in order).
    crop_size: Side C of the crop heatmaps the signature takes.
    timeout: Seconds per request.
    tls: ClientTls, or None for plaintext.
    version: Model version; None: the latest loaded.
    max_frames: Most frames per request (the server's limit; a person with masked joints in
      many views needs up to 1 + V frames).
  """

  def __init__(self, server: str, rig: Rig, crop_size: int = 64, timeout: float = 60.0,
               tls: ClientTls | None = None, version: int | None = None,
               max_frames: int = MAX_BATCH_FRAMES):
    if int(max_frames) < 1:
      raise ValueError(f"max_frames={max_frames}, expected an integer >= 1")
    self.server = server
    self.max_frames = int(max_frames)
    self.rig = rig
    self.crop_size = int(crop_size)
    self.timeout = float(timeout)
    self.version = version
    self.requests = 0  # Answered so far.
    self._lock = threading.Lock()
    self._slots = {camera.name: view for view, camera in enumerate(rig.cameras)}
    self._fill = np.stack([placeholder_affine(camera, self.crop_size) for camera in rig.cameras])
    self._channel = open_channel(server, tls)
    self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

  def close(self) -> None:
    self._channel.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def _slot(self, camera) -> int:
    view = self._slots.get(camera.name)
    if view is None or not np.allclose(camera.projection_matrix,
                                       self.rig.cameras[view].projection_matrix):
      raise ValueError(f"camera {camera.name!r} is not a camera of the served rig "
                       f"{self.rig.name!r} {list(self._slots)} with the same calibration")
    return view

  def __call__(self, heatmaps, affines, cameras, source_mask=None) -> np.ndarray:
    """[Vp, C, C, J] heatmaps, [Vp, 3, 3] affines, Vp cameras, [Vp, J] mask -> [Vp, J, 2] px.

    Raises:
      grpc.RpcError: The server rejected the request or could not be reached.
    """
    slots = [self._slot(camera) for camera in cameras]
    crop_heatmaps, crop_affines, frame = crop_fusion_frames(
        heatmaps, affines, slots, source_mask, self.rig.num_views, self._fill)
    joints = []  # [B, V, J, 2] in requests of at most max_frames frames.
    for start in range(0, len(crop_heatmaps), self.max_frames):
      chunk = slice(start, start + self.max_frames)
      request = predict_request(
          self.rig.name, CROP_SIGNATURE,
          {"crop_heatmaps": crop_heatmaps[chunk], "crop_affines": crop_affines[chunk]},
          output_filter=["joints_2d"], version=self.version)
      response = self._stub.Predict(request, timeout=self.timeout)
      with self._lock:
        self.requests += 1
      joints.append(response_arrays(response)["joints_2d"])
    return np.concatenate(joints)[frame, slots].astype(np.float64)


def load_views(paths, image_size: int) -> np.ndarray:
  """Reads one image file per view and resizes each whole frame to image_size x image_size.

  Args:
    paths: Image files (JPEG, PNG, BMP, GIF) in rig order.
    image_size: Model input side S in pixels.

  Returns:
    uint8 [V, S, S, 3].
  """
  views = []
  for path in paths:
    if not os.path.isfile(path):
      raise FileNotFoundError(f"image file {path!r} does not exist")
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(image, [image_size, image_size], antialias=True)
    views.append(tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8))
  return tf.stack(views).numpy()


def served_image_size(export_dir: str, rig_name: str) -> int | None:
  """The image side S of the latest version of `rig_name` exported under `export_dir`.

  Args:
    export_dir: The export root (holding `<rig_name>/<version>/`).
    rig_name: Served model name.

  Returns:
    S from the version's `assets.extra/export_config.json`, or None when there is no exported
    version or record.

  Raises:
    ValueError: The record's image_size is not a positive integer.
  """
  record = model_config.read_export_config(os.path.join(export_dir, rig_name))
  if record is None or "image_size" not in record:
    return None
  size = record["image_size"]
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise ValueError(f"export record of {rig_name!r} under {export_dir!r} has image_size "
                     f"{size!r}, expected a positive integer")
  return size


def keypoints_json(outputs: dict[str, np.ndarray], rig_name: str, image_paths) -> dict:
  """Per-view keypoints (camera image pixels), scores and 3D joints of one frame, JSON-ready."""
  result = {
      "rig": rig_name,
      "views": [
          {"image": path,
           "keypoints_image": np.round(outputs["keypoints_image"][v], 3).tolist(),
           "scores": np.round(outputs["scores"][v], 5).tolist()}
          for v, path in enumerate(image_paths)],
  }
  if "joints_3d" in outputs:
    result["joints_3d_mm"] = np.round(outputs["joints_3d"], 2).tolist()
  return result


