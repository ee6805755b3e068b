r"""--mode=predict: send one frame (an image per view) to a TF Serving server for a rig.

    python -m mf_tf.main --mode=predict --server=HOST:8500 --rig=h36m \
        --images=view0.jpg,view1.jpg,view2.jpg,view3.jpg --workdir=/tmp/mf_tf

The client and the image-size convention are `mf_tf.serving.client`'s.
"""

from __future__ import annotations

import json
import os

from absl import logging

from mf_tf import files
from mf_tf.modes import export as export_mode
from mf_tf.serving import client


def run(config, workdir: str, *, server: str, rig: str | None, images) -> dict:
  """One request with `images` (--images) to `server` (--server) for `rig` (--rig).

  Prints the result and writes it to <workdir>/predict/<rig>.json.
  """
  if not rig:
    raise ValueError("--mode=predict needs --rig=NAME (the served model name)")
  if not images:
    raise ValueError("--mode=predict needs --images=view0.jpg,view1.jpg,... (one per view)")
  export_dir = export_mode.export_dir(config, workdir)
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
  outputs = client.predict(server, rig, views, timeout=config.export.client_timeout_s)
  result = client.keypoints_json(outputs, rig, list(images))
  text = json.dumps(result, indent=1)
  print(text)
  path = files.write_atomic(os.path.join(workdir, "predict", f"{rig}.json"), text)
  logging.info("wrote %s", path)
  return result
