"""Readers on the real calibration files: conventions, units, validation, canonical files."""

import json
import logging
import pathlib

import numpy as np
import pytest

from mf_tf.geometry import calibration
from mf_tf.geometry.camera import CalibrationError, Camera
from mf_tf.geometry.rig import Rig
from mf_tf.geometry.rigs import get_rig, list_rigs
from mf_tf.geometry.volume import axes_meeting_point, capture_volume

FIXTURES = pathlib.Path(__file__).resolve().parent / "data"
PANOPTIC = "panoptic/160906_band1/calibration_160906_band1.json"


def _read_all(shared_data):
  """Every real rig the readers produce."""
  rigs = {
      "panoptic_vga": calibration.read_panoptic(shared_data / PANOPTIC, "vga"),
      "panoptic_hd": calibration.read_panoptic(shared_data / PANOPTIC, "hd"),
      "panoptic_demo_hd": calibration.read_panoptic(
          shared_data / "panoptic/demo/camera_parameters.json", "hd"),
      "shelf": calibration.read_shelf(shared_data / "shelf/calibration_shelf.json"),
      "campus": calibration.read_campus(shared_data / "campus/calibration_campus.json"),
  }
  for subject in ("S1", "S5", "S9", "S11"):
    rigs[f"h36m_{subject}"] = calibration.read_h36m(shared_data / "h36m/cameras.json", subject)
  for subject, sequence in (("S1", "Seq1"), ("S8", "Seq2")):
    rigs[f"mpi_{subject}_{sequence}"] = calibration.read_mpi_inf_3dhp(
        shared_data / "mpi_inf_3dhp/cameras_train.json", subject, sequence)
  return rigs


def _panoptic_joints(shared_data, sequence="160906_band1"):
  """Confident real joints (mm) and their coco19 indices."""
  joints, indices = [], []
  folder = shared_data / "panoptic" / sequence / "hdPose3d_stage1_coco19"
  for path in sorted(folder.glob("*.json")):
    for body in json.loads(path.read_text())["bodies"]:
      values = np.asarray(body["joints19"]).reshape(-1, 4)
      confident = values[:, 3] > 0.1
      joints.append(values[confident, :3] * 10.0)  # centimetres -> millimetres
      indices.append(np.nonzero(confident)[0])
  return np.concatenate(joints), np.concatenate(indices)


def test_panoptic_joints_project_inside_hd_images(shared_data):
  rig = calibration.read_panoptic(shared_data / PANOPTIC, "hd")
  assert rig.num_views == 31 and rig.cameras[0].width == 1920
  band1, band2 = (_panoptic_joints(shared_data, name) for name in ("160906_band1", "160906_band2"))
  joints = np.concatenate([band1[0], band2[0]])
  upper_body = np.isin(np.concatenate([band1[1], band2[1]]), [0, 1, 3, 9, 15, 16, 17, 18])
  inside, in_front, below = [], [], []
  for camera in rig.cameras:
    uv, depth = camera.project(joints)
    in_front.append(depth > 0)
    inside.append((depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < camera.width) & (uv[:, 1] >= 0)
                  & (uv[:, 1] < camera.height))
    below.append(uv[:, 1] >= camera.height)
  inside, in_front, below = np.stack(inside), np.stack(in_front), np.stack(below)
  assert in_front.all()
  # The seated band's legs fall below the bottom edge of the low HD cameras (measured: 88% of
  # all (joint, camera) cases inside); heads and shoulders are inside in >= 95% of cases, and
  # every miss is below the bottom edge, never off to a side or above.
  assert inside.mean() >= 0.85, inside.mean()
  assert inside[:, upper_body].mean() >= 0.95, inside[:, upper_body].mean()
  assert np.all(inside | below)
  # The five highest cameras see every joint.
  assert np.sum(inside.all(axis=1)) >= 5
  # Wrong units fail this: t read 10x too small, joints leave the images.
  wrong = Camera("x", rig.cameras[0].K, rig.cameras[0].R, rig.cameras[0].t / 10.0,
                 rig.cameras[0].dist, 1920, 1080)
  uv, depth = wrong.project(joints)
  seen = (depth > 0) & (np.abs(uv[:, 0] - 960) < 960) & (np.abs(uv[:, 1] - 540) < 540)
  assert np.mean(seen) < 0.5


def test_every_real_rig_looks_at_a_common_capture_volume(shared_data):
  rigs = _read_all(shared_data)
  rigs.update({name: get_rig(name) for name in list_rigs()})
  for name, rig in rigs.items():
    if name == "panoptic_vga":
      # The whole VGA dome: one camera (10_06) points away; >= 99% see the centre.
      center = axes_meeting_point(rig)
      seen = [_sees(camera, center) for camera in rig.cameras]
      assert np.mean(seen) > 0.99, name
      continue
    center, half_extent = capture_volume(rig)
    assert half_extent[0] > 300.0, (name, half_extent)
    for camera in rig.cameras:
      assert _sees(camera, center), (name, camera.name)


def _sees(camera, point):
  uv, depth = camera.project(point[None])
  return (depth[0] > 0 and 0 <= uv[0, 0] < camera.width and 0 <= uv[0, 1] < camera.height)


def test_camera_up_axes_agree_with_the_stored_world_up(shared_data):
  """Cameras are mounted upright, so their -y axes confirm each source's rotation convention."""
  for name, rig in _read_all(shared_data).items():
    camera_up = np.mean([-camera.R[1] for camera in rig.cameras], axis=0)
    cosine = camera_up @ rig.up / np.linalg.norm(camera_up)
    assert cosine > np.cos(np.deg2rad(30)), (name, camera_up, rig.up)


def test_h36m_conventions_on_real_poses(shared_data):
  sample = np.load(shared_data / "h36m/body3d_sample.npz")
  # `S` holds camera-frame joints in metres (z ~ 5 m), `part` their image coordinates.
  assert 3.0 < np.median(sample["S"][..., 2]) < 7.0
  for index, image_name in enumerate(sample["imgname"]):
    subject = str(image_name).split("/")[0]
    camera_id = str(image_name).split(".")[1].split("/")[0]
    rig = calibration.read_h36m(shared_data / "h36m/cameras.json", subject)
    camera = next(camera for camera in rig.cameras if camera.name == camera_id)
    local = Camera("local", camera.K, np.eye(3), np.zeros(3), camera.dist, camera.width,
                   camera.height)
    joints_cam = sample["S"][index, :, :3] * 1000.0
    uv, _ = local.project(joints_cam)
    assert np.all((uv >= 0) & (uv < [camera.width, camera.height]))
    np.testing.assert_allclose(uv, sample["part"][index, :, :2], atol=0.5)
    # Extrinsics: back in the world, a foot is on the floor (z = 0) and the head is above the
    # pelvis (frame 1 sits on the floor with one foot raised).
    world = (joints_cam - camera.t) @ camera.R
    ankles = world[[3, 6], 2]  # h36m17: pelvis 0, right ankle 3, left ankle 6, head 10.
    assert -100.0 < ankles.min() < 300.0, ankles
    assert world[10, 2] - world[0, 2] > 300.0
    # And the world joints project inside all four images.
    for other in rig.cameras:
      uv, depth = other.project(world)
      assert np.all(depth > 0) and np.all((uv >= 0) & (uv < [other.width, other.height]))


def test_h36m_reader_values(shared_data):
  raw = json.loads((shared_data / "h36m/cameras.json").read_text())["S9/54138969"]
  camera = calibration.read_h36m(shared_data / "h36m/cameras.json", "S9").cameras[0]
  np.testing.assert_allclose(camera.center, np.ravel(raw["T"]) * 1000.0)
  np.testing.assert_allclose(camera.R, np.asarray(raw["R"]).T)
  assert camera.K[0, 0] == pytest.approx(raw["f"][0][0]) and camera.width == 1000


def test_shelf_and_campus_t_is_a_camera_centre_in_millimetres(shared_data):
  for reader, file, size in ((calibration.read_shelf, "shelf/calibration_shelf.json", (1032, 776)),
                             (calibration.read_campus, "campus/calibration_campus.json",
                              (360, 288))):
    raw = json.loads((shared_data / file).read_text())
    rig = reader(shared_data / file)
    for camera, entry in zip(rig.cameras, raw.values()):
      np.testing.assert_allclose(camera.center, np.ravel(entry["T"]), atol=0.01)  # R has 6 digits.
      assert (camera.width, camera.height) == size
      # The principal point sits near the image centre for the assumed size.
      assert np.all(np.abs(camera.K[:2, 2] - np.array(size) / 2) < 0.15 * np.array(size))
    # Read as a translation instead, some camera would have the volume behind it.
    wrong = Rig("wrong", [Camera(c.name, c.K, c.R, np.ravel(e["T"]), c.dist, c.width, c.height)
                          for c, e in zip(rig.cameras, raw.values())])
    center = axes_meeting_point(wrong)
    assert not all(_sees(camera, center) for camera in wrong.cameras)


def test_mpi_inf_3dhp_image_size_is_repaired_with_a_warning(shared_data, caplog):
  path = shared_data / "mpi_inf_3dhp/cameras_train.json"
  with caplog.at_level(logging.WARNING):
    rig = calibration.read_mpi_inf_3dhp(path, "S2", "Seq1")
  assert rig.num_views == 8 and all((c.width, c.height) == (2048, 2048) for c in rig.cameras)
  assert "2048x204" in caplog.text and "2048x2048" in caplog.text
  with pytest.raises(CalibrationError, match=r"fields 'w', 'h' are 2048x204"):
    calibration.read_mpi_inf_3dhp(path, "S2", "Seq1", repair=False)
  subset = calibration.read_mpi_inf_3dhp(path, "S1", "Seq1", cameras=[2, 0])
  assert [camera.name for camera in subset.cameras] == ["cam2", "cam0"]
  with pytest.raises(CalibrationError, match="Cam3"):
    calibration.read_mpi_inf_3dhp(path, "S1", "Seq1", cameras=[3])
  with pytest.raises(CalibrationError, match="no cameras for S9_Seq1"):
    calibration.read_mpi_inf_3dhp(path, "S9", "Seq1")


def test_totalcapture_fixture():
  rig = calibration.read_totalcapture(FIXTURES / "totalcapture_calibration.cal")
  assert rig.num_views == 4 and [c.name for c in rig.cameras] == ["cam1", "cam2", "cam3", "cam4"]
  first = rig.cameras[0]
  assert (first.width, first.height) == (1920, 1080)
  np.testing.assert_allclose(first.K, [[1080, 0, 959.5], [0, 1081, 539.5], [0, 0, 1]])
  np.testing.assert_allclose(first.dist, [-0.1, 0, 0, 0, 0])
  np.testing.assert_allclose(first.t, [0.0, 988.936353, 4193.090136])  # metres -> mm
  np.testing.assert_allclose(rig.cameras[3].dist[0], -0.13)
  # The fixture's cameras stand on a 4 m ring at 1.6 m looking at (0, 1 m, 0).
  np.testing.assert_allclose(axes_meeting_point(rig), [0.0, 1000.0, 0.0], atol=1e-3)
  for camera in rig.cameras:
    assert np.linalg.norm(camera.center[[0, 2]]) == pytest.approx(4000.0, abs=1e-3)


@pytest.mark.parametrize("edit, words", [
    (lambda lines: lines[:5], ["5 non-empty lines", "expected 29"]),
    (lambda lines: ["4"] + lines[1:], ["line 1", "num_cameras distortion_order"]),
    (lambda lines: lines[:2] + ["1080 1081 959.5"] + lines[3:], ["cam1", "fx fy cx cy",
                                                                 "3 values, expected 4"]),
    (lambda lines: lines[:7] + ["0 nan 4.1"] + lines[8:], ["cam1", "t (metres)", "non-finite"]),
    (lambda lines: lines[:7] + ["0 988.9 4193.0"] + lines[8:], ["cam1", "field 't'",
                                                                "wrong units"]),
    (lambda lines: lines[:4] + ["2 0 0"] + lines[5:], ["cam1", "field 'R'", "not a rotation"]),
])
def test_totalcapture_rejects_bad_files(tmp_path, edit, words):
  lines = (FIXTURES / "totalcapture_calibration.cal").read_text().splitlines()
  path = tmp_path / "calibration.cal"
  path.write_text("\n".join(edit(lines)) + "\n")
  with pytest.raises(CalibrationError) as error:
    calibration.read_totalcapture(path)
  assert str(path) in str(error.value)
  for word in words:
    assert word in str(error.value), str(error.value)


def test_missing_files_are_named(tmp_path):
  missing = tmp_path / "nothing.json"
  readers = [calibration.load_rig_file, calibration.read_panoptic, calibration.read_h36m,
             calibration.read_shelf, calibration.read_campus, calibration.read_mpi_inf_3dhp,
             calibration.read_totalcapture]
  for reader in readers:
    with pytest.raises(FileNotFoundError, match="nothing.json"):
      reader(missing)


def _write(tmp_path, data, name="calibration.json"):
  path = tmp_path / name
  path.write_text(json.dumps(data))
  return path


def test_readers_name_the_bad_field(shared_data, tmp_path):
  panoptic = json.loads((shared_data / PANOPTIC).read_text())
  hd = [camera for camera in panoptic["cameras"] if camera["type"] == "hd"][:3]
  broken = json.loads(json.dumps(hd))
  del broken[1]["distCoef"]
  with pytest.raises(CalibrationError, match=r"calibration.json: camera '00_01': missing field "
                                             r"'distCoef'"):
    calibration.read_panoptic(_write(tmp_path, {"cameras": broken}), "hd")
  broken = json.loads(json.dumps(hd))
  broken[2]["K"] = [[1, 0], [0, 1]]
  with pytest.raises(CalibrationError, match=r"camera '00_02': field 'K' has shape \(2, 2\), "
                                             r"expected \(3, 3\)"):
    calibration.read_panoptic(_write(tmp_path, {"cameras": broken}), "hd")
  with pytest.raises(CalibrationError, match="no camera of type 'vga'"):
    calibration.read_panoptic(_write(tmp_path, {"cameras": hd}), "vga")
  with pytest.raises(CalibrationError, match=r"cameras \['00_09'\] not found"):
    calibration.read_panoptic(_write(tmp_path, {"cameras": hd}), "hd", ["00_00", "00_09"])

  h36m = json.loads((shared_data / "h36m/cameras.json").read_text())
  subset = {key: value for key, value in h36m.items() if key.startswith("S9/")}
  millimetres = json.loads(json.dumps(subset))
  for entry in millimetres.values():
    entry["T"] = (np.asarray(entry["T"]) * 1000.0).tolist()  # Already in mm: read as metres.
  with pytest.raises(CalibrationError,
                     match=r"field 'T' \(camera centre in metres\) has norm .* mm.*wrong units"):
    calibration.read_h36m(_write(tmp_path, millimetres), "S9")
  with pytest.raises(CalibrationError, match=r"no cameras for subject 'S2'.*\['S9'\]"):
    calibration.read_h36m(_write(tmp_path, subset), "S2")
  broken = json.loads(json.dumps(subset))
  broken["S9/55011271"]["f"] = [[1145.0], [float("nan")]]
  with pytest.raises(CalibrationError, match=r"camera 'S9/55011271': field 'f' holds non-finite"):
    calibration.read_h36m(_write(tmp_path, broken), "S9")

  shelf = json.loads((shared_data / "shelf/calibration_shelf.json").read_text())
  metres = json.loads(json.dumps(shelf))
  for entry in metres.values():
    entry["T"] = (np.asarray(entry["T"]) / 1000.0).tolist()
  with pytest.raises(CalibrationError, match=r"camera '0': field 'T' \(camera centre in "
                                             r"millimetres\) has norm .*wrong units"):
    calibration.read_shelf(_write(tmp_path, metres))
  broken = json.loads(json.dumps(shelf))
  del broken["3"]["fy"]
  with pytest.raises(CalibrationError, match=r"camera '3': missing field 'fy'"):
    calibration.read_campus(_write(tmp_path, broken))

  mpi = json.loads((shared_data / "mpi_inf_3dhp/cameras_train.json").read_text())
  broken = {key: value for key, value in mpi.items() if key.startswith("S1_Seq1")}
  broken["S1_Seq1_Cam4"]["R"] = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]
  with pytest.raises(CalibrationError, match=r"'S1_Seq1_Cam4': field 'R' has shape \(4, 3\)"):
    calibration.read_mpi_inf_3dhp(_write(tmp_path, broken))

  bad = tmp_path / "bad.json"
  bad.write_text("{")
  with pytest.raises(CalibrationError, match="bad.json: not valid JSON"):
    calibration.read_shelf(bad)


def test_canonical_rig_file_round_trip(shared_data, tmp_path):
  for rig in (calibration.read_panoptic(shared_data / PANOPTIC, "vga", ["01_01", "07_12"]),
              calibration.read_h36m(shared_data / "h36m/cameras.json", "S11"),
              calibration.read_totalcapture(FIXTURES / "totalcapture_calibration.cal")):
    path = tmp_path / rig.name / "rig.json"
    calibration.save_rig_file(rig, path)
    loaded = calibration.load_rig_file(path)
    assert loaded.name == rig.name and loaded.camera_names == rig.camera_names
    assert (loaded.up is None) == (rig.up is None) and loaded.floor == rig.floor
    if rig.up is not None:
      np.testing.assert_array_equal(loaded.up, rig.up)
    for a, b in zip(rig.cameras, loaded.cameras):
      for field in ("K", "R", "t", "dist"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
      assert (a.width, a.height) == (b.width, b.height)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # No temporary file left.
    # Saving over an existing file replaces it.
    calibration.save_rig_file(rig.subset([0, 1], "two"), path)
    assert calibration.load_rig_file(path).num_views == 2


def test_canonical_rig_file_errors(tmp_path):
  rig = get_rig("shelf")
  good = calibration.rig_to_dict(rig)
  cases = [
      (lambda d: d.pop("cameras"), "missing field 'cameras'"),
      (lambda d: d.update(units="m"), "field 'units' is 'm', expected 'mm'"),
      (lambda d: d.update(cameras=[]), "non-empty list"),
      (lambda d: d["cameras"][1].pop("R"), "camera '1': missing field 'R'"),
      (lambda d: d["cameras"][2].update(t=[1.0, 1.0, 1.0]), "camera '2': field 't' has norm"),
      (lambda d: d.update(up=[0, 1]), "field 'up' has shape (2,)"),
      (lambda d: d["cameras"][1].update(name="0"), "duplicate camera names"),
  ]
  for change, words in cases:
    d = json.loads(json.dumps(good))
    change(d)
    path = _write(tmp_path, d, "rig.json")
    with pytest.raises(CalibrationError) as error:
      calibration.load_rig_file(path)
    assert "rig.json" in str(error.value) and words in str(error.value), str(error.value)
