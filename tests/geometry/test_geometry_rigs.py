"""Built-in and procedural rigs, capture volume, pair order, rig matching."""

import numpy as np
import pytest

from mf_tf.geometry import calibration
from mf_tf.geometry import make_builtin_rigs
from mf_tf.geometry.rig import Rig, RigMismatchError, check_same_rig, ordered_pairs, pair_index
from mf_tf.geometry.rigs import dome_rig, get_rig, list_rigs, look_at, ring_rig
from mf_tf.geometry.volume import capture_volume, up_vector, visible_fraction

REQUIRED = ["panoptic_vga20", "panoptic_heldout6", "panoptic_hd", "h36m", "h36m_S1", "h36m_S11",
            "shelf", "campus", "mpi_inf_3dhp"]


def test_builtin_rigs_are_shipped_and_loadable():
  names = list_rigs()
  for name in REQUIRED:
    assert name in names
    rig = get_rig(name)
    assert rig.name == name and rig.up is not None and rig.floor == 0.0
  assert get_rig("panoptic_vga20").num_views == 20
  assert get_rig("panoptic_vga20").pairs.shape == (380, 2)  # The paper's 380 ordered pairs.
  assert get_rig("panoptic_heldout6").num_views == 6
  assert get_rig("panoptic_hd").num_views == 31
  assert get_rig("h36m").camera_names == get_rig("h36m_S9").camera_names
  np.testing.assert_array_equal(get_rig("h36m").cameras[1].t, get_rig("h36m_S9").cameras[1].t)
  assert (get_rig("mpi_inf_3dhp").cameras[0].width, get_rig("mpi_inf_3dhp").cameras[0].height) \
      == (2048, 2048)


def test_panoptic_selection_spreads_over_the_dome():
  vga20, heldout6 = get_rig("panoptic_vga20"), get_rig("panoptic_heldout6")
  panels = [int(name.split("_")[0]) for name in vga20.camera_names]
  assert panels == list(range(1, 21))
  assert not set(vga20.camera_names) & set(heldout6.camera_names)
  # Azimuths around the vertical (-y) axis cover the circle.
  azimuth = np.sort([np.arctan2(camera.center[2], camera.center[0]) for camera in vga20.cameras])
  gaps = np.diff(np.concatenate([azimuth, azimuth[:1] + 2 * np.pi]))
  assert gaps.max() < np.deg2rad(60)


def test_builtin_files_match_the_conversion_script(shared_data):
  for stem, rig in make_builtin_rigs.build_all(shared_data).items():
    shipped = get_rig(stem)
    check_same_rig(rig, shipped, check_geometry=True, tolerance=1e-12)
    np.testing.assert_array_equal(rig.up, shipped.up)


def test_get_rig_by_path_and_unknown_names(tmp_path):
  path = tmp_path / "mine.json"
  calibration.save_rig_file(ring_rig(3, seed=1), path)
  assert get_rig(str(path)).num_views == 3 and get_rig(path).name == "ring3_s1"
  with pytest.raises(ValueError) as error:
    get_rig("panoptic_vga21")
  assert "panoptic_vga21" in str(error.value)
  for name in ("panoptic_vga20", "h36m", "shelf"):
    assert name in str(error.value)


@pytest.mark.parametrize("make", [
    lambda seed: ring_rig(8, seed=seed),
    lambda seed: ring_rig(3, radius_mm=3000, height_mm=2500, seed=seed, image_size=(640, 480)),
    lambda seed: dome_rig(20, seed=seed),
    lambda seed: dome_rig(5, radius_mm=6000, seed=seed, image_size=(1920, 1080), focal=1500),
])
def test_procedural_rigs_see_the_volume(make):
  for seed in (0, 1, 2):
    rig = make(seed)
    assert rig.up is not None and rig.floor == 0.0
    target = np.array([0.0, 0.0, 900.0])
    assert visible_fraction(rig, target, margin=10).all()
    center, half_extent = capture_volume(rig)
    np.testing.assert_allclose(center, target, atol=300.0)
    assert half_extent[0] >= 500.0
    # A standing person (floor to 1.8 m) at the centre is seen by every camera.
    body = np.array([[0.0, 0.0, z] for z in np.linspace(0.0, 1800.0, 7)])
    assert visible_fraction(rig, body).all()
    np.testing.assert_allclose(up_vector(rig), [0, 0, 1])
    for camera in rig.cameras:
      np.testing.assert_allclose(camera.R @ camera.R.T, np.eye(3), atol=1e-12)
      assert np.linalg.det(camera.R) == pytest.approx(1.0)
  # Deterministic in the seed, different across seeds.
  np.testing.assert_array_equal(make(4).cameras[0].t, make(4).cameras[0].t)
  assert not np.allclose(make(4).cameras[0].t, make(5).cameras[0].t)


def test_look_at_is_upright():
  R, t = look_at([4000.0, 0.0, 1500.0], [0.0, 0.0, 900.0], [0.0, 0.0, 1.0])
  camera_center = -R.T @ t
  np.testing.assert_allclose(camera_center, [4000.0, 0.0, 1500.0])
  assert R[1] @ [0.0, 0.0, 1.0] < -0.9  # Image rows run downwards in the world.
  np.testing.assert_allclose(R[2], np.array([-4000.0, 0.0, -600.0]) / np.hypot(4000.0, 600.0))


def test_ordered_pairs_count_and_order():
  for num_views in (2, 3, 5, 20):
    pairs = ordered_pairs(num_views)
    assert pairs.shape == (num_views * (num_views - 1), 2) and pairs.dtype == np.int32
    assert np.all(pairs[:, 0] != pairs[:, 1])
    assert len({tuple(pair) for pair in pairs}) == len(pairs)
    # Grouped by target, sources increasing within a target.
    np.testing.assert_array_equal(pairs[:, 1], np.repeat(np.arange(num_views), num_views - 1))
    for index, (source, target) in enumerate(pairs):
      assert pair_index(source, target, num_views) == index
  np.testing.assert_array_equal(ordered_pairs(3), [[1, 0], [2, 0], [0, 1], [2, 1], [0, 2], [1, 2]])
  with pytest.raises(ValueError, match="at least 2 views"):
    ordered_pairs(1)


def test_check_same_rig():
  rig = ring_rig(4, seed=0)
  check_same_rig(rig, Rig("copy", rig.cameras))
  with pytest.raises(RigMismatchError, match="mismatched rig.*4 views.*3"):
    check_same_rig(rig, rig.subset([0, 1, 2]))
  with pytest.raises(RigMismatchError, match="mismatched rig: camera names differ"):
    check_same_rig(rig, rig.subset([1, 0, 2, 3]))
  other = ring_rig(4, seed=1)
  check_same_rig(rig, other)  # Same names: fine unless geometry is compared.
  with pytest.raises(RigMismatchError, match="camera 'cam00' field 'K' differs"):
    check_same_rig(rig, other, check_geometry=True)


def test_up_vector_estimate_without_stored_up():
  rig = dome_rig(6, seed=3)
  bare = Rig("bare", rig.cameras)
  assert bare.up is None
  assert up_vector(bare) @ [0.0, 0.0, 1.0] > 0.9
