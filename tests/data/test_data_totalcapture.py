"""Total Capture reader on fixture files written in the documented formats.

tests/fixtures/totalcapture/: calibration.cal (3 cameras, 1920x1080, metres) and
gt_skel_gbl_pos.txt (21 Vicon joints, 3 frames, inches) of a standing person in front of them.
"""

import pathlib

import numpy as np
import pytest

from mf_tf.data import joints as joints_lib
from mf_tf.data import totalcapture

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "totalcapture"
CALIBRATION = str(FIXTURES / "calibration.cal")
POSITIONS = str(FIXTURES / "gt_skel_gbl_pos.txt")


def test_reads_inches_as_millimetres_in_totalcapture16_order():
  data = totalcapture.read_totalcapture_sequence(CALIBRATION, POSITIONS)
  assert data["rig"].camera_names == ("cam1", "cam2", "cam3")
  assert data["joints3d"].shape == (3, 16, 3) and len(data["vicon_names"]) == 21
  np.testing.assert_array_equal(data["frame_ids"], [0, 1, 2])
  tc16 = joints_lib.get_joint_set("totalcapture16")
  # First values of the file: Hips of frame 0 = (-27.694693, -13.229833, 35.606480) inches.
  np.testing.assert_allclose(data["joints3d"][0, tc16.index("pelvis")],
                             np.array([-27.694693, -13.229833, 35.606480]) * 25.4)
  vicon = list(data["vicon_names"])
  for joint, name in totalcapture.VICON_TO_TOTALCAPTURE16.items():
    np.testing.assert_array_equal(data["joints3d"][:, tc16.index(joint)],
                                  data["vicon_joints3d"][:, vicon.index(name)])
  # Millimetres: adult thigh (hip-knee) and shin (knee-ankle) lengths are 330-520 mm; joints
  # and cameras agree on units, so every joint projects inside every image, in front of it.
  for upper, lower in (("lhip", "lknee"), ("rhip", "rknee"), ("lknee", "lankle"),
                       ("rknee", "rankle")):
    length = np.linalg.norm(data["joints3d"][:, tc16.index(upper)]
                            - data["joints3d"][:, tc16.index(lower)], axis=-1)
    assert np.all((length > 330) & (length < 520)), (upper, lower, length)
  for camera in data["rig"].cameras:
    uv, depth = camera.project(data["joints3d"])
    assert np.all(depth > 2000)
    assert np.all((uv >= 0) & (uv < [camera.width, camera.height]))


def test_camera_subset():
  data = totalcapture.read_totalcapture_sequence(CALIBRATION, POSITIONS, ["cam3", "cam1"])
  assert data["rig"].camera_names == ("cam3", "cam1")
  with pytest.raises(ValueError, match=r"cameras \['cam9'\] not found"):
    totalcapture.read_totalcapture_sequence(CALIBRATION, POSITIONS, ["cam9"])


def test_bad_files_give_one_clear_error(tmp_path):
  lines = open(POSITIONS).read().splitlines()
  short = tmp_path / "short.txt"
  values = lines[2].split("\t")
  short.write_text("\n".join([lines[0], lines[1], "\t".join(values[:20])]) + "\n")
  with pytest.raises(ValueError, match=r"short.txt line 3: 60 values, expected 63 finite floats"):
    totalcapture.read_positions(str(short))
  garbled = tmp_path / "garbled.txt"
  garbled.write_text(lines[0] + "\n" + lines[1].replace("-27.694693", "abc") + "\n")
  with pytest.raises(ValueError, match=r"garbled.txt line 2: non-numeric value; expected 63"):
    totalcapture.read_positions(str(garbled))
  header_only = tmp_path / "header.txt"
  header_only.write_text(lines[0] + "\n")
  with pytest.raises(ValueError, match="no frames after the header"):
    totalcapture.read_positions(str(header_only))
  renamed = tmp_path / "renamed.txt"
  renamed.write_text("\n".join([lines[0].replace("LeftHand", "LHand")] + lines[1:]) + "\n")
  with pytest.raises(ValueError, match=r"renamed.txt: header lacks Vicon joints \['LeftHand'\]"):
    totalcapture.read_totalcapture_sequence(CALIBRATION, str(renamed))
  with pytest.raises(FileNotFoundError, match="missing.txt not found"):
    totalcapture.read_positions(str(tmp_path / "missing.txt"))
  with pytest.raises(FileNotFoundError, match="none.cal not found"):
    totalcapture.read_totalcapture_sequence(str(tmp_path / "none.cal"), POSITIONS)
