"""Human3.6M readers: the converted CrossView layout and the real mmpose body3d sample."""

import pickle

import numpy as np
import pytest

from mf_tf.data import convert
from mf_tf.data import h36m
from mf_tf.geometry import rigs


def _crossview_items(subject=9, image_ids=(1, 2), drop=None, seed=0):
  """Annotation dicts in the H36M-Toolbox layout, from the real S9 cameras and a fake pose."""
  rig = rigs.get_rig("h36m_S9")
  rng = np.random.default_rng(seed)
  items = []
  for image_id in image_ids:
    joints_3d = np.array([0.0, 0.0, 900.0]) + rng.normal(0, 250, (17, 3))
    for camera_id, camera in enumerate(rig.cameras):
      if drop == (image_id, camera_id):
        continue
      uv, _ = camera.project(joints_3d)
      name = f"s_{subject:02d}_act_02_subact_01_ca_{camera_id + 1:02d}"
      items.append({
          "image": f"{name}/{name}_{image_id:06d}.jpg",
          "joints_2d": uv,
          "joints_3d": joints_3d,
          "joints_3d_camera": camera.world_to_camera(joints_3d),
          "joints_vis": np.ones((17, 3)),
          "video_id": camera_id,
          "image_id": image_id,
          "subject": subject,
          "action": 2,
          "subaction": 1,
          "camera_id": camera_id,
          "source": "h36m",
          "camera": {"R": camera.R, "T": camera.center.reshape(3, 1),
                     "fx": camera.K[0, 0], "fy": camera.K[1, 1],
                     "cx": camera.K[0, 2], "cy": camera.K[1, 2],
                     "k": camera.dist[[0, 1, 4]].reshape(3, 1),
                     "p": camera.dist[[2, 3]].reshape(2, 1)},
          "center": (float(uv[:, 0].mean()), float(uv[:, 1].mean())),
          "scale": (4.0, 4.0),
          "box": np.array([0.0, 0.0, 100.0, 100.0]),
      })
  return rig, items


def test_pickle_convert_then_safe_load(tmp_path, monkeypatch):
  rig, items = _crossview_items(image_ids=(1, 2, 3), drop=(3, 2))  # frame 3 lacks camera 2
  source = tmp_path / "h36m_validation.pkl"
  with open(source, "wb") as f:
    pickle.dump(items, f)
  out = convert.convert("h36m_pickle", str(source), str(tmp_path / "converted"),
                        trust_pickle=True)

  def no_unpickling(*args, **kwargs):
    raise AssertionError("the reader must not unpickle")

  monkeypatch.setattr(pickle, "load", no_unpickling)
  monkeypatch.setattr(pickle, "loads", no_unpickling)
  annotations = h36m.read_h36m_annotations(out)
  assert annotations["joints_2d"].shape == (11, 17, 2)
  np.testing.assert_array_equal(annotations["joints_vis"], 1.0)
  assert sorted(annotations["cameras"]) == ["S9/0", "S9/1", "S9/2", "S9/3"]

  data = h36m.read_h36m_multiview(out, subject=9, image_root="/images")
  assert data["rig"].name == "h36m_S9" and data["rig"].camera_names == h36m.CAMERA_IDS
  np.testing.assert_array_equal(data["image_id"], [1, 2])  # incomplete frame 3 dropped
  assert data["joints2d"].shape == (2, 4, 17, 2) and data["visibility"].shape == (2, 4, 17)
  assert data["image_paths"][1, 3] == (
      "/images/s_09_act_02_subact_01_ca_04/s_09_act_02_subact_01_ca_04_000002.jpg")
  for view, (loaded, original) in enumerate(zip(data["rig"].cameras, rig.cameras)):
    np.testing.assert_allclose(loaded.R, original.R, atol=1e-12)
    np.testing.assert_allclose(loaded.t, original.t, atol=1e-6)
    np.testing.assert_allclose(loaded.dist, original.dist, atol=1e-15)
    assert (loaded.width, loaded.height) == (original.width, original.height)
    uv, _ = loaded.project(data["joints3d"])  # annotation 2D = projection of annotation 3D
    np.testing.assert_allclose(uv, data["joints2d"][:, view], atol=1e-6)


def test_converter_rejects_bad_items(tmp_path):
  _, items = _crossview_items(image_ids=(1,))
  bad = dict(items[0], joints_3d=np.zeros((16, 3)))
  with pytest.raises(ValueError, match=r"item 1: .*expected 17 joints"):
    convert.convert_h36m_items([items[0], bad], str(tmp_path / "a"), source="x.pkl")
  bad = {k: v for k, v in items[0].items() if k != "camera"}
  with pytest.raises(ValueError, match=r"item 0: keys \['camera'\] missing"):
    convert.convert_h36m_items([bad], str(tmp_path / "b"))
  moved = dict(items[1], camera=dict(items[1]["camera"], fx=1.0))
  with pytest.raises(ValueError, match="camera S9/0 differs"):
    convert.convert_h36m_items([dict(items[1], camera_id=0), moved | {"camera_id": 0}],
                               str(tmp_path / "c"))
  with pytest.raises(FileNotFoundError, match="manifest.json not found"):
    h36m.read_h36m_annotations(str(tmp_path / "a"))


def test_real_body3d_sample_matches_its_2d_and_stands_on_the_floor(shared_data):
  data = h36m.read_h36m_body3d(str(shared_data / "h36m" / "body3d_sample.npz"),
                               str(shared_data / "h36m" / "cameras.json"))
  assert data["joints3d"].shape == (4, 17, 3)
  for i, camera in enumerate(data["cameras"]):
    uv, depth = camera.project(data["joints3d"][i])
    assert np.all(depth > 3000)
    # Intrinsics and distortion: the stored 2D parts are the distorted projections.
    assert np.max(np.abs(uv - data["joints2d"][i])) < 0.3
    uv_pinhole, _ = camera.project(data["joints3d"][i], distort=False)
    assert np.max(np.abs(uv_pinhole - data["joints2d"][i])) > 1.0
  # Extrinsics: z-up world with the floor at z = 0. In the standing frames (all but
  # S5 SittingDown) ankles are near the floor and the head 1.3-1.9 m above it.
  standing = [i for i, name in enumerate(data["image_names"]) if "Sitting" not in name]
  assert len(standing) == 3
  ankles = data["joints3d"][standing][:, [3, 6], 2]
  heads = data["joints3d"][standing][:, 10, 2]
  assert np.all(np.abs(ankles) < 200), ankles
  assert np.all((heads > 1300) & (heads < 1900)), heads


def test_body3d_errors(tmp_path, shared_data):
  with pytest.raises(FileNotFoundError, match="missing.npz"):
    h36m.read_h36m_body3d(str(tmp_path / "missing.npz"), str(shared_data / "h36m/cameras.json"))
  np.savez(tmp_path / "bad.npz", imgname=np.asarray(["S1/x.54138969/a.jpg"]),
           S=np.zeros((1, 16, 4)), part=np.zeros((1, 16, 3)))
  with pytest.raises(ValueError, match=r"expected \[M, 17, 4\]"):
    h36m.read_h36m_body3d(str(tmp_path / "bad.npz"), str(shared_data / "h36m/cameras.json"))
