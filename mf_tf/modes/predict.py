r"""--mode=predict: send one frame (an image per view) to a TF Serving server for a rig.

    python -m mf_tf.main --mode=predict --server=HOST:8500 --rig=h36m \
        --images=view0.jpg,view1.jpg,view2.jpg,view3.jpg --workdir=/tmp/mf_tf \
        [--tls_ca_cert=ca.pem [--tls_client_cert=client.pem --tls_client_key=client.key]]

Any --tls_* flag connects over TLS (without --tls_ca_cert, the system's CA roots check the
server); the client cert and key together give mutual TLS. The client and the image-size
convention are `mf_tf.serving.client`'s. An unreachable server, a refused connection or a
rejected request is one ValueError naming the server and the reason.
"""

from __future__ import annotations

import json
import os

import grpc
from absl import logging

from mf_tf import files
from mf_tf.modes import export as export_mode
from mf_tf.serving import client
from mf_tf.serving import model_config

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


def run(config, workdir: str, *, server: str, rig: str | None, images,
        tls_ca_cert: str | None = None, tls_client_cert: str | None = None,
        tls_client_key: str | None = None, tls_server_name: str | None = None) -> dict:
  """One request with `images` (--images) to `server` (--server) for `rig` (--rig).

  Prints the result and writes it to <workdir>/predict/<rig>.json.

  Raises:
    ValueError: No rig or images, a number of images other than the rig's views (when the
      export record is at hand), or a failed request (unreachable server, TLS mismatch,
      rejected input), naming the server and the reason.
    FileNotFoundError: An image or TLS file does not exist.
  """
  if not rig:
    raise ValueError("--mode=predict needs --rig=NAME (the served model name)")
  if not images:
    raise ValueError("--mode=predict needs --images=view0.jpg,view1.jpg,... (one per view)")
  tls = tls_options(tls_ca_cert, tls_client_cert, tls_client_key, tls_server_name)
  export_dir = export_mode.export_dir(config, workdir)
  image_size = client.served_image_size(export_dir, rig)
  record = model_config.read_export_config(os.path.join(export_dir, rig))
  num_views = (record or {}).get("num_views")
  if isinstance(num_views, int) and len(images) != num_views:
    raise ValueError(f"--images names {len(images)} files; rig {rig!r} has {num_views} views "
                     f"(export record under {export_dir!r}): one image per view, in rig order")
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
    outputs = client.predict(server, rig, views, timeout=config.export.client_timeout_s, tls=tls)
  except grpc.RpcError as error:
    raise request_error(error, server, rig, tls is not None) from error
  result = client.keypoints_json(outputs, rig, list(images))
  text = json.dumps(result, indent=1)
  print(text)
  path = files.write_atomic(os.path.join(workdir, "predict", f"{rig}.json"), text)
  logging.info("wrote %s", path)
  return result
