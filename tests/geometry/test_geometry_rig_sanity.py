"""Canonical rig files: unknown fields and rigs without a common capture volume are rejected."""

import json

import numpy as np
import pytest

from mf_tf.geometry import calibration
from mf_tf.geometry.camera import CalibrationError, Camera
from mf_tf.geometry.rig import Rig
from mf_tf.geometry import volume
from mf_tf.geometry.rigs import get_rig, list_rigs, look_at
from mf_tf.geometry.volume import axes_meeting_point

from test_geometry_calibration import _read_all  # pylint: disable=wrong-import-order

# Half a turn about the camera's own y axis: the camera keeps its centre and faces away.
_HALF_TURN = np.diag([-1.0, 1.0, -1.0])


def _rotated(rig, views=None):
  views = range(rig.num_views) if views is None else views
  return Rig(rig.name, tuple(
      Camera(c.name, c.K, _HALF_TURN @ c.R, _HALF_TURN @ c.t, c.dist, c.width, c.height)
      if v in views else c for v, c in enumerate(rig.cameras)), up=rig.up, floor=rig.floor)


def _t_over_ten(rig):
  return Rig(rig.name, tuple(Camera(c.name, c.K, c.R, c.t / 10.0, c.dist, c.width, c.height)
                             for c in rig.cameras), up=rig.up, floor=rig.floor)


def _save_and_load(rig, tmp_path):
  path = tmp_path / "rig.json"
  calibration.save_rig_file(rig, path)
  return calibration.load_rig_file(path)


@pytest.mark.parametrize("name", list_rigs())
def test_builtin_rigs_pass_and_their_broken_copies_fail(name, tmp_path):
  rig = get_rig(name)  # Loaded through load_rig_file: the check passes.
  volume.check_capture_volume(rig, name)
  with pytest.raises(CalibrationError, match=r"rig.json: the cameras do not share a capture "
                     r"volume: camera .* faces away: .* expected in front of it"):
    _save_and_load(_rotated(rig), tmp_path)
  with pytest.raises(CalibrationError, match=r"px tall, expected 20-\d+ px .* is 't' in "
                     r"millimetres\?"):
    _save_and_load(_t_over_ten(rig), tmp_path)


def test_real_rigs_of_every_reader_pass(shared_data, tmp_path):
  for rig in _read_all(shared_data).values():
    _save_and_load(rig, tmp_path)


def test_one_camera_facing_away_is_named():
  rig = get_rig("shelf")
  with pytest.raises(CalibrationError) as error:
    volume.check_capture_volume(_rotated(rig, views=[2]), "shelf.json")
  message = str(error.value)
  assert "camera '2' faces away" in message and "camera '0'" not in message, message


def test_camera_too_close_for_millimetres_is_rejected():
  """A camera 550 mm from the volume centre with f = 1000 px sees a third of a person."""
  rig = get_rig("h36m")
  center = axes_meeting_point(rig)
  camera = rig.cameras[0]
  position = center + 550.0 * (camera.center - center) / np.linalg.norm(camera.center - center)
  R, t = look_at(position, center, rig.up)
  close = Camera(camera.name, np.array([[1000.0, 0, 500], [0, 1000.0, 500], [0, 0, 1]]), R, t,
                 camera.dist, 1000, 1000)
  with pytest.raises(CalibrationError, match=f"camera {camera.name!r} sees a 1800 mm person at "
                     r"the volume centre \(\d{3} mm away\) 3\d{3} px tall, expected 20-2000 px"):
    volume.check_capture_volume(Rig("close", (close,) + rig.cameras[1:], up=rig.up), "x")


@pytest.mark.parametrize("where, field", [("camera", "distCoef"), ("rig", "comment")])
def test_unknown_fields_are_named_with_the_accepted_ones(tmp_path, where, field):
  d = calibration.rig_to_dict(get_rig("shelf"))
  entry = d["cameras"][1] if where == "camera" else d
  if field == "distCoef":
    entry[field] = entry.pop("dist")
  else:
    entry[field] = "x"
  path = tmp_path / "rig.json"
  path.write_text(json.dumps(d))
  accepted = calibration.CAMERA_FIELDS if where == "camera" else calibration.RIG_FIELDS
  with pytest.raises(CalibrationError) as error:
    calibration.load_rig_file(path)
  message = str(error.value)
  assert f"unknown field(s) ['{field}']" in message and str(list(accepted)) in message, message
  assert str(path) in message and (where == "rig" or "camera '1'" in message), message


def test_camera_looking_past_the_volume_is_named():
  rig = get_rig("shelf")
  angle = np.radians(60.0)  # About the camera's y axis: the centre stays in front, off-image.
  turn = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                   [-np.sin(angle), 0, np.cos(angle)]])
  cameras = list(rig.cameras)
  c = cameras[3]
  cameras[3] = Camera(c.name, c.K, turn @ c.R, turn @ c.t, c.dist, c.width, c.height)
  with pytest.raises(CalibrationError, match=r"camera '3' looks past the volume centre .* "
                     r"expected inside its 1032x776 image"):
    volume.check_capture_volume(Rig(rig.name, tuple(cameras), up=rig.up), "shelf.json")
