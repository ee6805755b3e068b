"""Calibration formats: the Qualisys convention on the real Pose2Sim file, the reader registry,
the writers' round trips, TOML units, fitting to video sizes, and the errors."""

import logging
import pathlib
import tomllib

import cv2
import numpy as np
import pytest

from mf_tf.geometry import calibration, calibration_formats
from mf_tf.geometry.camera import CalibrationError, Camera
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.volume import capture_volume, check_capture_volume

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures"
QUALISYS = FIXTURES / "calibrations" / "Calib.qca.txt"
PANOPTIC = FIXTURES / "panoptic_demo" / "camera_parameters.json"

# cam01 of Calib.qca.txt, typed from the file: <transform> and <intrinsic> attributes.
CAM01_TRANSFORM = dict(
    r11=0.5536380477336265, r12=0.8046719867383512, r13=0.2144479094331626,
    r21=-0.4345300743838753, r22=0.05946489349975602, r23=0.8986921279821063,
    r31=0.7104002579937896, r32=-0.5907342212870501, r33=0.3825762057979294,
    x=1460.2323709212087, y=-1909.1590482454608, z=1896.5058524092062)
CAM01_INTRINSIC = dict(
    centerPointU=34110.316406, centerPointV=60680.792969, focalLengthU=107599.671875,
    focalLengthV=107588.828125, radialDistortion1=-0.046183, radialDistortion2=0.139983,
    tangentalDistortion1=0.000608, tangentalDistortion2=0.00069)


@pytest.fixture(scope="module")
def qualisys_rig():
  return calibration_formats.read_calibration(QUALISYS)


def _grid(rig: Rig) -> np.ndarray:
  """[N, 3] mm: a 5x5x5 grid filling the rig's capture volume."""
  center, half = capture_volume(rig)
  assert half[0] > 300.0  # A volume a person fits in.
  steps = np.linspace(-1.0, 1.0, 5)
  offsets = np.stack(np.meshgrid(steps, steps, steps, indexing="ij"), axis=-1).reshape(-1, 3)
  return center + half * offsets


def _assert_same_rig(rig_a: Rig, rig_b: Rig, points: np.ndarray) -> None:
  assert rig_a.camera_names == rig_b.camera_names
  for camera_a, camera_b in zip(rig_a.cameras, rig_b.cameras):
    np.testing.assert_allclose(camera_b.K, camera_a.K, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(camera_b.dist, camera_a.dist, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(camera_b.R, camera_a.R, atol=1e-12)
    np.testing.assert_allclose(camera_b.t, camera_a.t, atol=1e-9)
    assert (camera_b.width, camera_b.height) == (camera_a.width, camera_a.height)
    np.testing.assert_allclose(camera_b.project(points)[0], camera_a.project(points)[0],
                               atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Qualisys, on the real file.


def test_qualisys_cameras_share_a_capture_volume(qualisys_rig):
  assert qualisys_rig.camera_names == ("cam01", "cam02", "cam03", "cam04")
  assert all((camera.width, camera.height) == (1088, 1920) for camera in qualisys_rig.cameras)
  np.testing.assert_allclose(qualisys_rig.cameras[0].center, [1460.2323709212087,
                                                              -1909.1590482454608,
                                                              1896.5058524092062])
  check_capture_volume(qualisys_rig, str(QUALISYS))
  center, half = capture_volume(qualisys_rig)
  # The cameras stand 1.7-2.1 m high around a volume near the floor (z up).
  assert abs(center[2]) < 1500.0 and half[0] > 500.0
  for camera in qualisys_rig.cameras:
    # Upright cameras: image rows run down, i.e. the camera's y axis points down the world z.
    assert camera.R[1] @ [0.0, 0.0, 1.0] < -0.8


def test_qualisys_without_the_camera_frame_flip_faces_away(qualisys_rig):
  """The QTM camera looks along its -z: without diag(1, -1, -1) every camera faces away."""
  unflipped = Rig("unflipped", tuple(
      Camera(camera.name, camera.K, np.diag([1.0, -1.0, -1.0]) @ camera.R,
             -np.diag([1.0, -1.0, -1.0]) @ camera.R @ camera.center, camera.dist, camera.width,
             camera.height) for camera in qualisys_rig.cameras))
  with pytest.raises(CalibrationError, match="faces away"):
    check_capture_volume(unflipped)


def test_qualisys_projection_matches_pose2sim_steps_by_hand(qualisys_rig):
  """cam01 from the raw numbers, following Pose2Sim's read_qca / calib_qca_fun step by step."""
  r = CAM01_TRANSFORM
  # read_qca: rotation given by columns -> by lines (transpose); translation mm -> m.
  rotation = np.array([[r["r11"], r["r12"], r["r13"]], [r["r21"], r["r22"], r["r23"]],
                       [r["r31"], r["r32"], r["r33"]]]).T
  translation = np.array([r["x"], r["y"], r["z"]]) / 1000.0
  # world_to_camera_persp: Qc = R Q + T -> inverse.
  rotation = rotation.T
  translation = -rotation @ translation
  # rotate_cam by pi about x, in homogeneous coordinates.
  flip = np.eye(4)
  flip[1:3, 1:3] = [[np.cos(np.pi), -np.sin(np.pi)], [np.sin(np.pi), np.cos(np.pi)]]
  rt = flip @ np.block([[rotation, translation[:, None]], [np.zeros((1, 3)), np.ones((1, 1))]])
  rvec = cv2.Rodrigues(rt[:3, :3])[0]
  tvec = rt[:3, 3]
  i = CAM01_INTRINSIC
  K = np.array([[i["focalLengthU"] / 64, 0.0, i["centerPointU"] / 64 - 0],  # fov_video left 0
                [0.0, i["focalLengthV"] / 64, i["centerPointV"] / 64 - 0],  # top 0
                [0.0, 0.0, 1.0]])
  dist = np.array([i["radialDistortion1"], i["radialDistortion2"], i["tangentalDistortion1"],
                   i["tangentalDistortion2"], 0.0]) / 64
  points_mm = np.array([[0.0, 0.0, 1000.0], [300.0, -200.0, 100.0], [-400.0, 500.0, 1700.0]])
  expected = cv2.projectPoints(points_mm / 1000.0, rvec, tvec, K, dist)[0].reshape(-1, 2)
  uv, depth = qualisys_rig.cameras[0].project(points_mm)
  np.testing.assert_allclose(uv, expected, atol=1e-6)
  assert np.all(depth > 1000.0)
  # The world origin (on the floor, inside the volume) is inside cam01's image.
  assert 0 < expected[0, 0] < 1088 and 0 < expected[0, 1] < 1920


def test_qualisys_video_resolution_scales_and_view_rotation_is_refused(tmp_path):
  text = QUALISYS.read_text()
  half = tmp_path / "half.qca.txt"
  half.write_text(text.replace('viewrotation="0"', 'viewrotation="0" video_resolution="540p"'))
  full, scaled = (calibration_formats.read_qualisys(path) for path in (QUALISYS, half))
  for camera_full, camera_half in zip(full.cameras, scaled.cameras):
    np.testing.assert_allclose(camera_half.K[:2], camera_full.K[:2] / 2)
    assert (camera_half.width, camera_half.height) == (544, 960)
  rotated = tmp_path / "rotated.qca.txt"
  rotated.write_text(text.replace('viewrotation="0"', 'viewrotation="90"', 1))
  with pytest.raises(CalibrationError, match=r"rotated.qca.txt: camera 'cam01'.*viewrotation"):
    calibration_formats.read_calibration(rotated)


def test_qualisys_video_window_offsets_the_principal_point(tmp_path):
  window = tmp_path / "window.qca.txt"
  window.write_text(QUALISYS.read_text().replace(
      '<fov_video bottom="1919" left="0" right="1087" top="0"/>',
      '<fov_video bottom="1909" left="8" right="1087" top="20"/>', 1))
  full, cropped = (calibration_formats.read_qualisys(path) for path in (QUALISYS, window))
  np.testing.assert_allclose(cropped.cameras[0].K[:2, 2], full.cameras[0].K[:2, 2] - [8, 20])
  assert (cropped.cameras[0].width, cropped.cameras[0].height) == (1080, 1890)


def test_qualisys_camera_facing_away_is_refused(tmp_path):
  """cam03 turned about its x axis by pi (its y and z columns negated): it faces away."""
  text = QUALISYS.read_text()
  start = text.index('serial="cam03"')
  end = text.index("</camera>", start)
  block = text[start:end]
  for name in ("r12", "r13", "r22", "r23", "r32", "r33"):
    value = block.split(f'{name}="')[1].split('"')[0]
    negated = value[1:] if value.startswith("-") else "-" + value
    block = block.replace(f'{name}="{value}"', f'{name}="{negated}"')
  away = tmp_path / "away.qca.txt"
  away.write_text(text[:start] + block + text[end:])
  with pytest.raises(CalibrationError, match=r"away.qca.txt: .*camera 'cam03' faces away"):
    calibration_formats.read_calibration(away)


def test_qualisys_missing_attribute_names_file_camera_and_field(tmp_path):
  broken = tmp_path / "broken.qca.txt"
  broken.write_text(QUALISYS.read_text().replace('focalLengthV="107123.023438" ', "", 1))
  with pytest.raises(CalibrationError,
                     match=r"broken.qca.txt: camera 'cam02'.*<intrinsic>.*'focalLengthV'"):
    calibration_formats.read_calibration(broken)


# ------------------------------------------------------------------------------------------------
# Writers: round trips through every format.


@pytest.mark.parametrize("target", ["rig.json", "rig.toml", "easymocap"])
def test_round_trip_keeps_every_projection(qualisys_rig, tmp_path, target):
  path = tmp_path / target
  calibration_formats.write_calibration(qualisys_rig, path)
  sizes = {camera.name: (camera.width, camera.height) for camera in qualisys_rig.cameras}
  read = calibration_formats.read_calibration(
      path, image_sizes=sizes if target == "easymocap" else None)
  _assert_same_rig(qualisys_rig, read, _grid(qualisys_rig))
  assert not [name for name in (p.name for p in tmp_path.rglob("*")) if name.endswith(".tmp")]


def test_toml_writer_layout(qualisys_rig, tmp_path):
  path = tmp_path / "Calib.toml"
  calibration_formats.write_calibration(qualisys_rig, path, format="toml")
  data = tomllib.loads(path.read_text())
  assert list(data) == ["cam01", "cam02", "cam03", "cam04", "metadata"]
  camera = qualisys_rig.cameras[1]
  entry = data["cam02"]
  assert entry["size"] == [1088, 1920] and entry["fisheye"] is False
  assert len(entry["distortions"]) == 5
  # Metres, and the Rodrigues vector of the world-to-camera rotation.
  np.testing.assert_allclose(entry["translation"], camera.t / 1000.0)
  np.testing.assert_allclose(cv2.Rodrigues(np.array(entry["rotation"]))[0], camera.R, atol=1e-12)


def test_easymocap_files_read_by_opencv(qualisys_rig, tmp_path):
  calibration_formats.write_calibration(qualisys_rig, tmp_path / "calib", format="easymocap")
  extri = cv2.FileStorage(str(tmp_path / "calib" / "extri.yml"), cv2.FILE_STORAGE_READ)
  camera = qualisys_rig.cameras[2]
  np.testing.assert_allclose(extri.getNode("T_cam03").mat().ravel(), camera.t / 1000.0)
  np.testing.assert_allclose(cv2.Rodrigues(extri.getNode("R_cam03").mat())[0], camera.R,
                             atol=1e-12)
  names = extri.getNode("names")
  assert [names.at(i).string() for i in range(names.size())] == list(qualisys_rig.camera_names)
  extri.release()
  # Either file's path names the folder.
  sizes = {name: (1088, 1920) for name in qualisys_rig.camera_names}
  for name in ("intri.yml", "extri.yml"):
    read = calibration_formats.read_calibration(tmp_path / "calib" / name, image_sizes=sizes)
    _assert_same_rig(qualisys_rig, read, _grid(qualisys_rig))


def test_easymocap_without_image_sizes_asks_for_them(qualisys_rig, tmp_path):
  calibration_formats.write_calibration(qualisys_rig, tmp_path / "calib")
  with pytest.raises(CalibrationError, match=r"calib: .*image_sizes.*'cam03', 'cam04'"):
    calibration_formats.read_calibration(tmp_path / "calib",
                                         image_sizes={"cam01": (1088, 1920),
                                                      "cam02": (1088, 1920)})


def test_easymocap_missing_field_names_file_and_field(qualisys_rig, tmp_path):
  calibration_formats.write_calibration(qualisys_rig, tmp_path / "calib")
  intri = tmp_path / "calib" / "intri.yml"
  text = intri.read_text()
  start = text.index("dist_cam02:")
  intri.write_text(text[:start] + text[text.index("K_cam03:"):])
  sizes = {name: (1088, 1920) for name in qualisys_rig.camera_names}
  with pytest.raises(CalibrationError, match=r"intri.yml: missing field 'dist_cam02'"):
    calibration_formats.read_calibration(tmp_path / "calib", image_sizes=sizes)


# ------------------------------------------------------------------------------------------------
# Registry: JSON formats, unknown formats.


def test_panoptic_through_the_registry_equals_read_panoptic():
  rig = calibration_formats.read_calibration(PANOPTIC)
  expected = calibration.read_panoptic(PANOPTIC, "hd")
  assert calibration_formats.detect_format(PANOPTIC) == "panoptic"
  _assert_same_rig(expected, rig, _grid(expected.subset([3, 6, 12])))
  names = ["00_12", "00_03"]
  _assert_same_rig(calibration.read_panoptic(PANOPTIC, names=names),
                   calibration_formats.read_calibration(PANOPTIC, names=names),
                   _grid(expected.subset([3, 6, 12])))


def test_canonical_json_told_from_panoptic_by_content(qualisys_rig, tmp_path):
  path = tmp_path / "cameras.json"
  calibration.save_rig_file(qualisys_rig, path)
  assert calibration_formats.detect_format(path) == "json"
  _assert_same_rig(calibration.load_rig_file(path), calibration_formats.read_calibration(path),
                   _grid(qualisys_rig))


def test_unknown_format_lists_the_supported_ones(tmp_path):
  path = tmp_path / "cameras.csv"
  path.write_text("name,fx\ncam01,1000\n")
  with pytest.raises(CalibrationError, match=r"cameras.csv: unknown calibration format.*toml.*"
                     r"qca.txt.*EasyMocap"):
    calibration_formats.read_calibration(path)
  with pytest.raises(CalibrationError, match=r"expected .json, .toml or a folder"):
    calibration_formats.write_calibration(Rig("r", (Camera("a", np.eye(3), np.eye(3),
                                                           [0, 0, 1000], None, 2, 2),)),
                                          tmp_path / "rig.csv")


def test_names_select_and_order_cameras(tmp_path, qualisys_rig):
  rig = calibration_formats.read_calibration(QUALISYS, names=["cam04", "cam02"])
  assert rig.camera_names == ("cam04", "cam02")
  with pytest.raises(CalibrationError, match=r"Calib.qca.txt: cameras \['cam9'\] not found"):
    calibration_formats.read_calibration(QUALISYS, names=["cam9"])


# ------------------------------------------------------------------------------------------------
# TOML: units and errors.


def _toml_text(rig: Rig, units_per_mm: float, extra: str = "", drop: str = "") -> str:
  """A Pose2Sim/anipose TOML written by hand (not by the writer), 4 distortions."""
  tables = []
  for index, camera in enumerate(rig.cameras):
    rvec = cv2.Rodrigues(camera.R)[0].ravel()
    fields = {
        "name": f'"{camera.name}"',
        "size": f"[ {camera.width}, {camera.height}]",
        "matrix": "[ " + ", ".join("[ " + ", ".join(repr(float(v)) for v in row) + "]"
                                   for row in camera.K) + "]",
        "distortions": "[ " + ", ".join(repr(float(v)) for v in camera.dist[:4]) + "]",
        "rotation": "[ " + ", ".join(repr(float(v)) for v in rvec) + "]",
        "translation": "[ " + ", ".join(repr(float(v) * units_per_mm) for v in camera.t) + "]",
        "fisheye": "false",
    }
    body = "".join(f"{key} = {value}\n" for key, value in fields.items()
                   if not (index == 1 and key == drop))
    tables.append(f"[cam_{index}]\n{body}{extra if index == 1 else ''}\n")
  return "".join(tables) + "[metadata]\nadjusted = false\nerror = 0.0\n"


def test_toml_in_metres_and_in_millimetres_read_to_the_same_rig(qualisys_rig, tmp_path):
  metres, millimetres = tmp_path / "pose2sim.toml", tmp_path / "anipose.toml"
  metres.write_text(_toml_text(qualisys_rig, 1e-3))
  millimetres.write_text(_toml_text(qualisys_rig, 1.0))
  points = _grid(qualisys_rig)
  read_m, read_mm = (calibration_formats.read_calibration(path) for path in (metres, millimetres))
  _assert_same_rig(read_m, read_mm, points)
  _assert_same_rig(qualisys_rig, read_m, points)
  assert read_m.camera_names == qualisys_rig.camera_names  # `name` wins over the table key.
  # A stated unit overrides the guess; a wrong one is caught by the capture volume.
  _assert_same_rig(read_m, calibration_formats.read_calibration(metres, units="m"), points)
  with pytest.raises(CalibrationError, match=r"pose2sim.toml"):
    calibration_formats.read_calibration(metres, units="mm")


def test_toml_in_implausible_units_asks_for_the_unit(qualisys_rig, tmp_path):
  centimetres = tmp_path / "board_cm.toml"
  centimetres.write_text(_toml_text(qualisys_rig, 0.1))
  with pytest.raises(CalibrationError, match=r"board_cm.toml: .*no plausible rig.*state the unit"):
    calibration_formats.read_calibration(centimetres)
  _assert_same_rig(qualisys_rig, calibration_formats.read_calibration(centimetres, units="cm"),
                   _grid(qualisys_rig))


def test_toml_fisheye_is_refused(qualisys_rig, tmp_path):
  path = tmp_path / "fish.toml"
  path.write_text(_toml_text(qualisys_rig, 1e-3).replace("fisheye = false", "fisheye = true", 1))
  with pytest.raises(CalibrationError, match=r"fish.toml: camera 'cam01'.*fisheye.*not supported"):
    calibration_formats.read_calibration(path)


def test_toml_missing_field_names_file_camera_and_field(qualisys_rig, tmp_path):
  path = tmp_path / "partial.toml"
  path.write_text(_toml_text(qualisys_rig, 1e-3, drop="matrix"))
  with pytest.raises(CalibrationError,
                     match=r"partial.toml: camera 'cam02' \(table \[cam_1\]\): missing field "
                           r"'matrix'"):
    calibration_formats.read_calibration(path)
  path.write_text(_toml_text(qualisys_rig, 1e-3).replace("distortions = [ ",
                                                         "distortions = [ 0.0, 0.0, ", 1))
  with pytest.raises(CalibrationError, match=r"'distortions' has 6 values, expected 4 or 5"):
    calibration_formats.read_calibration(path)


# ------------------------------------------------------------------------------------------------
# Fitting to the video sizes.


def test_fit_to_image_size_crop_resize_and_refusal(qualisys_rig, caplog):
  camera = qualisys_rig.cameras[0]
  with caplog.at_level(logging.WARNING):
    fitted = calibration_formats.fit_to_image_size(qualisys_rig, {"cam01": (1080, 1920)})
  assert "cam01" in caplog.text and "1080x1920" in caplog.text
  # Cropped at the right: same pixel grid, only the width changes.
  np.testing.assert_array_equal(fitted.cameras[0].K, camera.K)
  assert (fitted.cameras[0].width, fitted.cameras[0].height) == (1080, 1920)
  assert fitted.cameras[1] is qualisys_rig.cameras[1]
  # Half size: pixel centres at integers, u' = (u + 0.5) / 2 - 0.5.
  halved = calibration_formats.fit_to_image_size(qualisys_rig, {"cam02": (544, 960)}).cameras[1]
  points = _grid(qualisys_rig)
  np.testing.assert_allclose(halved.project(points)[0],
                             (qualisys_rig.cameras[1].project(points)[0] + 0.5) / 2 - 0.5,
                             atol=1e-9)
  with pytest.raises(CalibrationError, match=r"camera 'cam01'.*1000x1920, calibrated 1088x1920"):
    calibration_formats.fit_to_image_size(qualisys_rig, {"cam01": (1000, 1920)})
  with pytest.raises(CalibrationError, match=r"camera 'cam01'.*neither"):
    calibration_formats.fit_to_image_size(qualisys_rig, {"cam01": (1080, 1900)})
  with pytest.raises(CalibrationError, match=r"cameras \['cam7'\]"):
    calibration_formats.fit_to_image_size(qualisys_rig, {"cam7": (1080, 1920)})
  # The registry applies the video sizes.
  read = calibration_formats.read_calibration(QUALISYS, image_sizes={"cam02": (1080, 1920)})
  assert read.cameras[1].width == 1080
