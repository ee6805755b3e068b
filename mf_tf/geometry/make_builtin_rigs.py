r"""Converts the real calibrations into the built-in canonical rig files (package data).

  python -m mf_tf.geometry.make_builtin_rigs --shared_data=../shared/data

Writes mf_tf/geometry/rigs/*.json (see `mf_tf.geometry.rigs`). Run once after a change of the
readers or of the selection rules below, and commit the generated files.

Panoptic camera selection (deterministic): the person volume is the vertical segment from
(x0, -500, z0) to (x0, -1300, z0) mm (knees to shoulders of a standing person; the floor is
y = 0, y points down), where (x0, z0) is the horizontal position of the point closest to all VGA
optical axes. For every VGA panel 1-20 the nodes are ranked by how far the segment's ends
project from the image centre (max-norm, in half image sides); "panoptic_vga20" takes each
panel's best node, "panoptic_heldout6" the second-best node of panels 2, 5, 8, 11, 14, 17, so
the two rigs share no camera.
"""

from __future__ import annotations

import pathlib

from absl import app
from absl import flags
from absl import logging
import numpy as np

from mf_tf.geometry import calibration
from mf_tf.geometry import rigs
from mf_tf.geometry import volume
from mf_tf.geometry.rig import Rig

_SHARED_DATA = flags.DEFINE_string("shared_data", "../shared/data",
                                   "Folder holding the real calibrations (see its SOURCES.md).")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", str(rigs.BUILTIN_DIR),
                                  "Where the canonical rig files are written.")

PANOPTIC_CALIBRATION = "panoptic/160906_band1/calibration_160906_band1.json"
HELDOUT_PANELS = (2, 5, 8, 11, 14, 17)
PERSON_SEGMENT_Y_MM = (-500.0, -1300.0)


def _panoptic_node_ranking(vga: Rig) -> dict[int, list[str]]:
  """panel -> camera names of that panel, best-centred on the person segment first."""
  meeting = volume.axes_meeting_point(vga)
  segment = np.array([[meeting[0], y, meeting[2]] for y in PERSON_SEGMENT_Y_MM])
  scored: dict[int, list[tuple[float, str]]] = {}
  for camera in vga.cameras:
    uv, depth = camera.project(segment)
    half = np.array([camera.width, camera.height]) / 2.0
    score = float(np.max(np.abs(uv - half) / half)) if np.all(depth > 0) else np.inf
    panel = int(camera.name.split("_")[0])
    scored.setdefault(panel, []).append((score, camera.name))
  return {panel: [name for _, name in sorted(items)] for panel, items in scored.items()}


def build_all(shared_data: pathlib.Path) -> dict[str, Rig]:
  """All built-in rigs, keyed by their file stem."""
  panoptic_path = shared_data / PANOPTIC_CALIBRATION
  vga = calibration.read_panoptic(panoptic_path, "vga")
  ranking = _panoptic_node_ranking(vga)
  vga20 = [ranking[panel][0] for panel in range(1, 21)]
  heldout6 = [ranking[panel][1] for panel in HELDOUT_PANELS]
  assert not set(vga20) & set(heldout6)
  built = {
      "panoptic_vga20": calibration.read_panoptic(panoptic_path, "vga", vga20),
      "panoptic_heldout6": calibration.read_panoptic(panoptic_path, "vga", heldout6),
      "panoptic_hd": calibration.read_panoptic(panoptic_path, "hd"),
      "shelf": calibration.read_shelf(shared_data / "shelf/calibration_shelf.json"),
      "campus": calibration.read_campus(shared_data / "campus/calibration_campus.json"),
      "mpi_inf_3dhp": calibration.read_mpi_inf_3dhp(
          shared_data / "mpi_inf_3dhp/cameras_train.json", "S1", "Seq1"),
  }
  for subject in rigs.H36M_SUBJECTS:
    built[f"h36m_{subject}"] = calibration.read_h36m(shared_data / "h36m/cameras.json", subject)
  return {stem: Rig(stem, rig.cameras, up=rig.up, floor=rig.floor) for stem, rig in built.items()}


def main(argv):
  del argv
  output = pathlib.Path(_OUTPUT_DIR.value)
  for stem, rig in build_all(pathlib.Path(_SHARED_DATA.value)).items():
    path = output / f"{stem}.json"
    calibration.save_rig_file(rig, path)
    logging.info("wrote %s (%d cameras: %s)", path, rig.num_views,
                 " ".join(rig.camera_names))


if __name__ == "__main__":
  app.run(main)
