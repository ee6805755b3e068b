r"""--mode=calibrate: calibration files between the formats people have.

  python -m mf_tf.main --mode=calibrate --workdir=runs/w \
      --config.calibrate.calibration=session/calibration/Calib.qca.txt \
      --config.calibrate.convert=runs/w/calibration.toml

Reads any format `mf_tf.geometry.calibration_formats` reads (canonical JSON, Panoptic JSON,
OpenCV / anipose / Caliscope / Pose2Sim TOML, Qualisys .qca.txt, EasyMocap intri.yml +
extri.yml) and writes it as canonical JSON (.json), TOML (.toml, the Pose2Sim / anipose layout,
metres) or EasyMocap (a folder: intri.yml + extri.yml), chosen by the output's extension or by
config.calibrate.format. An output given without a folder goes under <workdir>/calibrate/.
Prints each camera's reprojection agreement between the file read and the file written (the
same 3D points projected through both, px), which is 0 up to the formats' precision.
"""

from __future__ import annotations

import os

import numpy as np

from mf_tf.geometry import calibration_formats


def run(config, workdir: str) -> None:
  """--mode=calibrate: reads config.calibrate (see configs/default.py)."""
  settings = config.calibrate
  source, target = str(settings.calibration).strip(), str(settings.convert).strip()
  if not source or not target:
    raise ValueError("config.calibrate.calibration (the file to read) and config.calibrate.convert "
                     "(the file or folder to write) are both required")
  if not os.path.exists(os.path.expanduser(source)):
    raise FileNotFoundError(f"calibration file {source!r} not found")
  rig = calibration_formats.read_calibration(os.path.expanduser(source),
                                             units=str(settings.units) or None)
  if not os.path.dirname(target):
    target = os.path.join(workdir, "calibrate", target)
  target = os.path.expanduser(target)
  calibration_formats.write_calibration(rig, target, format=str(settings.format) or None)
  image_sizes = {camera.name: (camera.width, camera.height) for camera in rig.cameras}
  again = calibration_formats.read_calibration(target, image_sizes=image_sizes)
  # A grid of points in front of every camera: 2 m around the point nearest to every optical axis.
  centers = np.stack([-camera.R.T @ camera.t for camera in rig.cameras])
  middle = centers.mean(axis=0)
  grid = middle + np.stack(np.meshgrid(*[np.linspace(-1000, 1000, 5)] * 3), -1).reshape(-1, 3)
  for camera, other in zip(rig.cameras, again.cameras):
    uv, depth = camera.project(grid)
    uv_again, _ = other.project(grid)
    seen = depth > 0
    difference = float(np.abs(uv[seen] - uv_again[seen]).max()) if seen.any() else 0.0
    print(f"calibrate: camera {camera.name}: {camera.width}x{camera.height}, largest projection "
          f"difference after the round trip {difference:.2e} px")
  print(f"calibrate: {len(rig.cameras)} cameras of {source} written to {target}")
