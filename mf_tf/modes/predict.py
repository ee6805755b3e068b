r"""--mode=predict: one instant (an image per view) through a TF Serving server for a rig.

    python -m mf_tf.main --mode=predict --server=HOST:8500 --rig=h36m \
        --images=view0.jpg,view1.jpg,view2.jpg,view3.jpg --workdir=/tmp/mf_tf \
        [--config.predict.route=crops|image] [--config.export.dir=EXPORT_DIR] \
        [--tls_ca_cert=ca.pem [--tls_client_cert=client.pem --tls_client_key=client.key]]

Two routes (config.predict.route):

  crops (default; real camera frames): the instant goes as in --mode=video
    (`mf_tf.reconstruct.reconstructor.Reconstructor`, config.video's settings): BlazePose here (LiteRT)
    finds the people and their crop heatmaps in every view, association and triangulation run
    here, and each person's crop fusion runs on the server, in the rig's fuse_crops signature
    (`mf_tf.serving.client.ServedCropFusion`). Images are the calibration's full size; the
    served rig's calibration is its export record's `assets.extra/rig.json` under
    config.export.dir (or config.predict.rig_file). Writes the people as --mode=video writes an
    instant in frames.jsonl (`mf_tf.reconstruct.outputs.frame_record`: per person the views,
    fused 2D joints in raw image px, scores, 3D joints in world mm, reprojection errors).
  image: the whole images go to the served backbone (serving_default); the client resizes them
    (`mf_tf.serving.client`'s convention). Only meaningful with a backbone trained on images
    like these. Writes per view the keypoints and scores, and the rig's 3D joints.

The result is printed and written atomically to <workdir>/predict/<rig>.json. Any --tls_* flag
connects over TLS (without --tls_ca_cert, the system's CA roots check the server); the client
cert and key together give mutual TLS. An unreachable server, a refused connection or a rejected
request is one ValueError naming the server and the reason.
"""

from __future__ import annotations

import dataclasses
import json
import os

import grpc
import numpy as np
from absl import logging

from mf_tf import files
from mf_tf.data import joints as joints_lib
from mf_tf.geometry import calibration
from mf_tf.geometry.rig import Rig
from mf_tf.models import blazepose
from mf_tf.modes import export as export_mode
from mf_tf.modes import video as video_mode
from mf_tf.reconstruct import outputs
from mf_tf.reconstruct import reconstructor as reconstructor_lib
from mf_tf.serving import client
from mf_tf.serving import export as export_lib
from mf_tf.serving import model_config

ROUTES = ("crops", "image")

_TLS_FLAGS = ("--tls_ca_cert", "--tls_client_cert", "--tls_client_key")


def tls_options(ca_cert: str | None, client_cert: str | None, client_key: str | None,
                server_name: str | None) -> client.ClientTls | None:
  """The TLS files of the --tls_* flags (None: plaintext), each checked to exist."""
  paths = (ca_cert, client_cert, client_key)
  if not any(paths) and not server_name:
    return None
  for flag, path in zip(_TLS_FLAGS, paths):
    if path and not os.path.isfile(path):
      raise FileNotFoundError(f"{flag}={path}: no such file; expected a PEM file")
  if bool(client_cert) != bool(client_key):
    raise ValueError("--tls_client_cert and --tls_client_key go together (mutual TLS); got "
                     f"--tls_client_cert={client_cert} --tls_client_key={client_key}")
  return client.ClientTls(ca_cert=ca_cert or None, cert=client_cert or None,
                          key=client_key or None, server_name=server_name or None)


def request_error(error: grpc.RpcError, server: str, rig: str, tls: bool) -> ValueError:
  """One line for a failed Predict call: the server, the gRPC status and what to check."""
  code = error.code() if callable(getattr(error, "code", None)) else None
  details = error.details() if callable(getattr(error, "details", None)) else str(error)
  name = code.name if code is not None else "ERROR"
  if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
    hint = ("check --server and that TF Serving runs there; a TLS server needs --tls_ca_cert"
            if not tls else "check --server, that TF Serving runs there with TLS, and the "
            "--tls_* certificate files")
    return ValueError(f"no answer from TF Serving at --server={server} ({name}: {details}); "
                      f"{hint}")
  return ValueError(f"TF Serving at --server={server} refused the request for rig {rig!r} "
                    f"({name}: {details})")


def route(config) -> str:
  """config.predict.route ("crops" when the config has no predict section)."""
  value = str((config.get("predict") or {}).get("route", "crops"))
  if value not in ROUTES:
    raise ValueError(f"config.predict.route={value!r}, expected one of {list(ROUTES)}")
  return value


def run(config, workdir: str, *, server: str, rig: str | None, images,
        tls_ca_cert: str | None = None, tls_client_cert: str | None = None,
        tls_client_key: str | None = None, tls_server_name: str | None = None) -> dict:
  """One instant of `images` (--images) through `server` (--server) for `rig` (--rig).

  Prints the result and writes it to <workdir>/predict/<rig>.json (module docstring).

  Raises:
    ValueError: No rig or images, a number of images other than the rig's views, an unknown
      route, no calibration (crops), or a failed request (unreachable server, TLS mismatch,
      rejected input), naming the server and the reason.
    FileNotFoundError: An image or TLS file does not exist.
  """
  if not rig:
    raise ValueError("--mode=predict needs --rig=NAME (the served model name)")
  if not images:
    raise ValueError("--mode=predict needs --images=view0.jpg,view1.jpg,... (one per view)")
  chosen = route(config)
  tls = tls_options(tls_ca_cert, tls_client_cert, tls_client_key, tls_server_name)
  export_dir = export_mode.export_dir(config, workdir)
  record = model_config.read_export_config(os.path.join(export_dir, rig))
  num_views = (record or {}).get("num_views")
  if isinstance(num_views, int) and len(images) != num_views:
    raise ValueError(f"--images names {len(images)} files; rig {rig!r} has {num_views} views "
                     f"(export record under {export_dir!r}): one image per view, in rig order")
  if chosen == "crops":
    result = _predict_crops(config, server, rig, list(images), tls, export_dir, record)
  else:
    result = _predict_image(config, server, rig, list(images), tls, export_dir)
  text = json.dumps(result, indent=1)
  print(text)
  path = files.write_atomic(os.path.join(workdir, "predict", f"{rig}.json"), text)
  logging.info("wrote %s", path)
  return result


def _predict_image(config, server: str, rig: str, images: list, tls, export_dir: str) -> dict:
  """route=image: the whole images, resized, to the served backbone."""
  image_size = client.served_image_size(export_dir, rig)
  if image_size is None:
    image_size = int(config.image_size)
    logging.warning("no export record of %r under %s (set --config.export.dir to the served "
                    "export folder); resizing images to config.image_size=%d", rig,
                    export_dir, image_size)
  elif image_size != int(config.image_size):
    logging.info("served model %r takes %d px images (config.image_size is %d); resizing to %d",
                 rig, image_size, int(config.image_size), image_size)
  views = client.load_views(images, image_size)
  try:
    served = client.predict(server, rig, views, timeout=config.export.client_timeout_s, tls=tls)
  except grpc.RpcError as error:
    raise request_error(error, server, rig, tls is not None) from error
  return client.keypoints_json(served, rig, images)


def served_rig(config, export_dir: str, rig: str) -> Rig:
  """The served rig's calibration: config.predict.rig_file, else the export record's rig.json.

  Raises:
    ValueError: Neither is at hand, or the file names another rig than --rig.
  """
  path = str((config.get("predict") or {}).get("rig_file", "") or "")
  if not path:
    base = os.path.join(export_dir, rig)
    version = model_config.latest_version(base)
    path = "" if version is None else os.path.join(base, str(version), model_config.ASSETS_EXTRA,
                                                   export_lib.RIG_FILE)
    if not path or not os.path.isfile(path):
      raise ValueError(
          f"config.predict.route=crops needs the calibration of the served rig {rig!r}: no "
          f"exported version with {model_config.ASSETS_EXTRA}/{export_lib.RIG_FILE} under "
          f"{base!r}; set --config.export.dir to the served export folder or "
          "--config.predict.rig_file to the rig's rig.json")
  elif not os.path.isfile(path):
    raise FileNotFoundError(f"config.predict.rig_file={path}: no such file")
  found = calibration.load_rig_file(path)
  if found.name != rig:
    raise ValueError(f"rig file {path!r} holds rig {found.name!r}, but --rig={rig}: expected "
                     "the served rig's own rig.json")
  return found


def read_views(paths, rig: Rig) -> list[np.ndarray]:
  """The images, full size, one per camera of `rig` in its order, each its camera's size."""
  if len(paths) != rig.num_views:
    raise ValueError(f"--images names {len(paths)} files; rig {rig.name!r} has {rig.num_views} "
                     f"views {list(rig.camera_names)}: one image per view, in rig order")
  views = []
  for path, camera in zip(paths, rig.cameras):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"image file {path!r} does not exist")
    image = blazepose.read_image(path)
    height, width = image.shape[:2]
    if (width, height) != (int(camera.width), int(camera.height)):
      raise ValueError(f"image {path!r} of camera {camera.name!r} is {width}x{height}, expected "
                       f"{int(camera.width)}x{int(camera.height)} (the served calibration's "
                       "image size; config.predict.route=crops takes the camera's full frame)")
    views.append(image)
  return views


def _predict_crops(config, server: str, rig: str, images: list, tls, export_dir: str,
                   record: dict | None) -> dict:
  """route=crops: the instant as --mode=video, the crop fusion by the served rig."""
  settings = video_mode.session_settings(config)
  if settings.instant.fusion != "epipolar":
    raise ValueError(f"config.predict.route=crops fuses on the server; config.video.fusion is "
                     f"{settings.instant.fusion!r}, expected 'epipolar'")
  joint_set = joints_lib.get_joint_set(settings.joint_set)
  cameras = served_rig(config, export_dir, rig)
  views = read_views(images, cameras)
  if record is not None:
    if export_lib.SIGNATURE_CROPS not in record.get("signatures", [export_lib.SIGNATURE_CROPS]):
      raise ValueError(f"the export of rig {rig!r} under {export_dir!r} has no "
                       f"{export_lib.SIGNATURE_CROPS} signature; export it again")
    if record.get("num_joints", joint_set.num_joints) != joint_set.num_joints:
      raise ValueError(f"served rig {rig!r} takes {record['num_joints']} joints, "
                       f"config.video.joint_set={joint_set.name!r} has {joint_set.num_joints}")
    logging.info("served crop fusion of %r: line_width_px=%s line_value=%s", rig,
                 record.get("line_width_px"), record.get("line_value"))
  crop_size = int((record or {}).get("crop_heatmap_size", export_lib.CROP_HEATMAP_SIZE))
  with client.ServedCropFusion(server, cameras, crop_size,
                               timeout=float(config.export.client_timeout_s), tls=tls) as fuse:
    reconstructor = reconstructor_lib.Reconstructor(
        video_mode.models(int(config.video.workers)), cameras, joint_set,
        dataclasses.replace(settings.instant, fuse=fuse), settings.tracking)
    try:
      result = reconstructor.step(views)
    except grpc.RpcError as error:
      raise request_error(error, server, rig, tls is not None) from error
    finally:
      reconstructor.close()
    requests = fuse.requests
  frame = outputs.frame_record(0, "predict", cameras, result)
  return {"rig": rig, "route": "crops", "images": dict(zip(cameras.camera_names, images)),
          "joint_set": joint_set.name, "joint_names": list(joint_set.names),
          "fuse_crops_requests": requests, "detections": frame["detections"],
          "recovered": frame["recovered"], "people": frame["people"]}
