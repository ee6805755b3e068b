"""BlazePose's point table (`blazepose.BLAZEPOSE_POINTS`) against MediaPipe's landmark order, and
the sides it gives on real images."""

import pathlib

import numpy as np
import pytest

from mf_tf.data import joints as joints_lib
from mf_tf.geometry import calibration_formats
from mf_tf.models import blazepose
from mf_tf.models import fetch_blazepose
from mf_tf.reconstruct import people

from video_settings import instant_settings  # pylint: disable=wrong-import-order

# MediaPipe's pose landmark model: its 33 landmarks in output order, as the Pose Landmarker guide
# lists them (https://ai.google.dev/edge/mediapipe/solutions/vision/pose_landmarker, "Pose
# landmarker model"). Written out here as the oracle the project's table is checked against.
_MEDIAPIPE_LANDMARKS = {
    0: "nose", 1: "left eye (inner)", 2: "left eye", 3: "left eye (outer)",
    4: "right eye (inner)", 5: "right eye", 6: "right eye (outer)", 7: "left ear",
    8: "right ear", 9: "mouth (left)", 10: "mouth (right)", 11: "left shoulder",
    12: "right shoulder", 13: "left elbow", 14: "right elbow", 15: "left wrist",
    16: "right wrist", 17: "left pinky", 18: "right pinky", 19: "left index", 20: "right index",
    21: "left thumb", 22: "right thumb", 23: "left hip", 24: "right hip", 25: "left knee",
    26: "right knee", 27: "left ankle", 28: "right ankle", 29: "left heel", 30: "right heel",
    31: "left foot index", 32: "right foot index"}

# MediaPipe's name -> the project's (left = the person's left, "l"/"r" prefixes).
_PROJECT_NAMES = {
    "nose": "nose", "left eye (inner)": "leye_inner", "left eye": "leye",
    "left eye (outer)": "leye_outer", "right eye (inner)": "reye_inner", "right eye": "reye",
    "right eye (outer)": "reye_outer", "left ear": "lear", "right ear": "rear",
    "mouth (left)": "mouth_left", "mouth (right)": "mouth_right",
    "left shoulder": "lshoulder", "right shoulder": "rshoulder", "left elbow": "lelbow",
    "right elbow": "relbow", "left wrist": "lwrist", "right wrist": "rwrist",
    "left pinky": "lpinky", "right pinky": "rpinky", "left index": "lindex",
    "right index": "rindex", "left thumb": "lthumb", "right thumb": "rthumb",
    "left hip": "lhip", "right hip": "rhip", "left knee": "lknee", "right knee": "rknee",
    "left ankle": "lankle", "right ankle": "rankle", "left heel": "lheel",
    "right heel": "rheel", "left foot index": "lfoot_index", "right foot index": "rfoot_index"}

_CAMERAS = ("00_03", "00_06", "00_12", "00_13", "00_23")
_INSTANTS = ("00004500", "00005514", "00006859", "00009348", "00013007")


def test_points_follow_mediapipe_landmark_order():
  assert blazepose.NUM_POINTS == len(_MEDIAPIPE_LANDMARKS) == 33
  expected = tuple(_PROJECT_NAMES[_MEDIAPIPE_LANDMARKS[index]] for index in range(33))
  mismatches = [(index, found, wanted) for index, (found, wanted)
                in enumerate(zip(blazepose.BLAZEPOSE_POINTS, expected)) if found != wanted]
  assert len(blazepose.BLAZEPOSE_POINTS) == 33 and not mismatches, mismatches


def test_joint_sets_take_each_side_from_that_side():
  # Every project joint named "l..." / "r..." that is a BlazePose point reads the landmark of
  # MediaPipe's index for that side.
  index_of = {_PROJECT_NAMES[name]: index for index, name in _MEDIAPIPE_LANDMARKS.items()}
  for set_name in blazepose.JOINT_SOURCES:
    joint_set = joints_lib.get_joint_set(set_name)
    weights = blazepose.joint_weights(joint_set)  # [J, 33]
    for row, name in enumerate(joint_set.names):
      if name in index_of and name[0] in "lr":  # Sided joints that are a BlazePose point.
        assert weights[row, index_of[name]] == 1.0, (set_name, name)


@pytest.fixture(scope="module")
def demo_people(repo_root):
  # The models come from the documented setup step: absent, the test fails (no skip).
  fetch_blazepose.verified_model_paths()
  demo = pathlib.Path(repo_root) / "tests" / "fixtures" / "panoptic_demo"
  rig = calibration_formats.read_calibration(str(demo / "camera_parameters.json"),
                                             names=list(_CAMERAS))
  model = blazepose.BlazePose()
  h36m = joints_lib.get_joint_set("h36m17")
  found = []
  for instant in _INSTANTS:
    estimates = [model.estimate(blazepose.read_image(str(demo / name / f"{name}_{instant}.jpg")),
                                h36m, camera=camera)
                 for name, camera in zip(_CAMERAS, rig.cameras)]
    found += [(instant, person)
              for person in people.reconstruct_people(estimates, rig, h36m, instant_settings())]
  return h36m, found


@pytest.mark.large
def test_wrists_lie_on_the_side_of_their_shoulder(demo_people):
  # Independent of the table's labels: in 3D, a person's left wrist lies further along the
  # right-to-left shoulder axis than the right wrist whenever the arms are not crossed, and
  # the people of the demo frames stand with their arms down or out. A table with the wrists
  # exchanged puts every "left" wrist on the right, consistently in every view, so association
  # and triangulation keep it there.
  h36m, found = demo_people
  index = {name: h36m.index(name) for name in ("lwrist", "rwrist", "lshoulder", "rshoulder")}
  margins = []
  for instant, person in found:
    joints3d = person["joints3d"]
    if len(person["views"]) < 3 or not np.isfinite(joints3d[list(index.values())]).all():
      continue
    axis = joints3d[index["lshoulder"]] - joints3d[index["rshoulder"]]
    axis /= np.linalg.norm(axis)
    margins.append((instant, float(axis @ (joints3d[index["lwrist"]]
                                           - joints3d[index["rwrist"]]))))
  assert len(margins) >= 5, margins
  # Left minus right wrist along the shoulder axis, mm: 205-663 mm over the 7 people seen by
  # 3-5 views (the shoulders lie 300-370 mm apart); exchanged wrists give the opposite sign.
  assert all(margin > 100.0 for _, margin in margins), margins
