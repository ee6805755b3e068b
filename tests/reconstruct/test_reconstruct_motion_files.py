"""Motion files: TRC / C3D / CSV round trips, the TRC header and C3D header bytes, up rotation."""

import os
import struct

import numpy as np
import pytest

from mf_tf.data.joints import get_joint_set
from mf_tf.reconstruct import motion_files

NAMES = list(get_joint_set("h36m17").names)


def _motion(num_frames=5, seed=0):
  """[T, 17, 3] mm within 2 m of the origin (C3D stores float32: 2 m keeps 1e-4 mm), two gaps."""
  rng = np.random.default_rng(seed)
  positions = rng.uniform(-1900.0, 1900.0, size=(num_frames, len(NAMES), 3))
  positions[1, 3] = np.nan
  positions[num_frames - 1, 16] = np.nan
  return positions


def _no_temporaries(folder):
  return [name for name in os.listdir(folder) if name.endswith(".tmp") or ".tmp." in name]


@pytest.mark.parametrize("units, atol_mm", [
    ("m", 1e-3),  # Metres with 6 decimals: rounding is at most 0.5 micrometre = 5e-4 mm.
    ("mm", 1e-4),  # Millimetres with 4 decimals: at most 5e-5 mm.
])
def test_trc_round_trip(tmp_path, units, atol_mm):
  positions = _motion()
  path = motion_files.write_trc(tmp_path / "a.trc", positions, NAMES, 50, units=units,
                                first_frame=11)
  read = motion_files.read_trc(path)
  assert read["joint_names"] == NAMES
  assert read["fps"] == 50.0 and read["units"] == units
  np.testing.assert_array_equal(read["frames"], np.arange(11, 16))
  np.testing.assert_allclose(read["times_s"], (np.arange(11, 16) - 1) / 50.0, atol=1e-6)
  np.testing.assert_array_equal(np.isnan(read["positions_mm"]), np.isnan(positions))
  np.testing.assert_allclose(read["positions_mm"], positions, atol=atol_mm, equal_nan=True)
  assert _no_temporaries(tmp_path) == []


def test_c3d_round_trip(tmp_path):
  positions = _motion()
  residuals = np.full(positions.shape[:2], 3.0)
  path = motion_files.write_c3d(tmp_path / "a.c3d", positions, NAMES, 60.0, residuals=residuals)
  read = motion_files.read_c3d(path)
  assert read["joint_names"] == NAMES
  assert read["fps"] == 60.0 and read["units"] == "mm"
  np.testing.assert_array_equal(np.isnan(read["positions_mm"]), np.isnan(positions))
  np.testing.assert_allclose(read["positions_mm"], positions, atol=1e-4, equal_nan=True)
  expected_residuals = np.where(np.isnan(positions[..., 0]), -1.0, 3.0)
  np.testing.assert_array_equal(read["residuals"], expected_residuals)
  np.testing.assert_array_equal(read["frames"], np.arange(1, 6))
  assert _no_temporaries(tmp_path) == []


def test_read_c3d_honours_negative_residuals(tmp_path):
  # Other tools write an invalid point as zeros with residual -1; it must come back missing.
  import ezc3d
  c3d = ezc3d.c3d()
  c3d["parameters"]["POINT"]["RATE"]["value"] = np.array([100.0])
  c3d["parameters"]["POINT"]["UNITS"]["value"] = ["m"]
  c3d["parameters"]["POINT"]["LABELS"]["value"] = ("a", "b")
  points = np.ones((4, 2, 2))
  points[:3] = 0.5
  points[:3, 1, 0] = 0.0
  c3d["data"]["points"] = points
  c3d["data"]["meta_points"] = {"residuals": np.array([[[0.0, 0.0], [-1.0, 0.0]]])}
  c3d.write(str(tmp_path / "other.c3d"))
  read = motion_files.read_c3d(tmp_path / "other.c3d")
  assert read["units"] == "m" and read["fps"] == 100.0
  expected = np.full((2, 2, 3), 500.0)  # Metres in the file, millimetres out.
  expected[0, 1] = np.nan
  np.testing.assert_array_equal(read["positions_mm"], expected)


def test_csv_round_trip(tmp_path):
  positions = _motion()
  path = motion_files.write_csv(tmp_path / "a.csv", positions, NAMES, 30)
  read = motion_files.read_csv(path)
  assert read["joint_names"] == NAMES
  np.testing.assert_array_equal(read["frames"], np.arange(5))
  assert read["fps"] == pytest.approx(30.0, rel=1e-4)
  np.testing.assert_array_equal(np.isnan(read["positions_mm"]), np.isnan(positions))
  np.testing.assert_allclose(read["positions_mm"], positions, atol=1e-4, equal_nan=True)
  with open(path) as stream:
    header, first = stream.readline().strip(), stream.readline().strip()
  assert header.startswith("frame,time_s,pelvis_x_mm,pelvis_y_mm,pelvis_z_mm,rhip_x_mm")
  assert first.startswith("0,0.000000,")
  second = open(path).read().splitlines()[2].split(",")
  assert second[2 + 3 * 3:2 + 3 * 3 + 3] == ["", "", ""]  # rankle missing in frame 1.


def test_trc_header_matches_hand_written(tmp_path):
  positions = np.array([[[1000.0, 2000.0, 3000.0], [-500.0, 0.0, 250.0]],
                        [[1001.0, 2000.0, 3000.0], [np.nan, np.nan, np.nan]],
                        [[1002.0, 2000.0, 3000.0], [-500.0, 0.0, 250.5]]])
  path = motion_files.write_trc(tmp_path / "walk.trc", positions, ["lhip", "rhip"], 30)
  with open(path, newline="") as stream:
    text = stream.read()
  expected = (
      "PathFileType\t4\t(X/Y/Z)\twalk.trc\n"
      "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\t"
      "OrigNumFrames\n"
      "30\t30\t3\t2\tm\t30\t1\t3\n"
      "Frame#\tTime\tlhip\t\t\trhip\t\t\t\n"
      "\t\tX1\tY1\tZ1\tX2\tY2\tZ2\t\n"
      "\n"
      "1\t0.000000\t1.000000\t2.000000\t3.000000\t-0.500000\t0.000000\t0.250000\n"
      "2\t0.033333\t1.001000\t2.000000\t3.000000\t\t\t\n"
      "3\t0.066667\t1.002000\t2.000000\t3.000000\t-0.500000\t0.000000\t0.250500\n")
  assert text == expected


def test_read_trc_tolerates_crlf_trailing_tabs_and_short_rows(tmp_path):
  # Hand-written like files from other tools: CRLF, trailing tabs, no blank line after the header,
  # a row cut short where its last marker is missing, 'NaN' for a missing value, Units mm.
  text = ("PathFileType\t4\t(X/Y/Z)\tother.trc\t\r\n"
          "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\t"
          "OrigNumFrames\t\r\n"
          "100.00\t100.00\t3\t2\tmm\t100.00\t1\t3\t\r\n"
          "Frame#\tTime\tHead\t\t\tToe\t\t\t\r\n"
          "\t\tX1\tY1\tZ1\tX2\tY2\tZ2\t\r\n"
          "1\t0\t1.5\t2.5\t3.5\t4\t5\t6\t\r\n"
          "2\t0.01\t1.5\t2.5\tNaN\r\n"
          "3\t0.02\t\t\t\t4\t5\t6\r\n")
  (tmp_path / "other.trc").write_bytes(text.encode())
  read = motion_files.read_trc(tmp_path / "other.trc")
  assert read["joint_names"] == ["Head", "Toe"] and read["fps"] == 100.0
  assert read["units"] == "mm"
  expected = np.array([[[1.5, 2.5, 3.5], [4, 5, 6]],
                       [[1.5, 2.5, np.nan], [np.nan] * 3],
                       [[np.nan] * 3, [4, 5, 6]]])
  np.testing.assert_array_equal(read["positions_mm"], expected)
  np.testing.assert_array_equal(read["frames"], [1, 2, 3])


def test_read_trc_rejects_marker_count_mismatch(tmp_path):
  text = ("PathFileType\t4\t(X/Y/Z)\tx.trc\n"
          "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\n"
          "30\t30\t1\t3\tm\n"
          "Frame#\tTime\tA\t\t\tB\t\t\t\n"
          "\t\tX1\tY1\tZ1\tX2\tY2\tZ2\n"
          "\n"
          "1\t0\t1\t2\t3\t4\t5\t6\n")
  (tmp_path / "x.trc").write_text(text)
  with pytest.raises(ValueError, match="NumMarkers is 3 but line 4 names 2"):
    motion_files.read_trc(tmp_path / "x.trc")


def _c3d_header_words(path):
  """The first 12 16-bit words of a C3D header (C3D.org user guide, "The header section")."""
  with open(path, "rb") as stream:
    block = stream.read(512)
  # Byte 1: block number of the parameter section; byte 2: 0x50 identifies a C3D file. The
  # processor type (byte 4 of the parameter section) says the byte order; ezc3d writes Intel.
  parameter_block, key = block[0], block[1]
  with open(path, "rb") as stream:
    stream.seek((parameter_block - 1) * 512)
    processor = stream.read(4)[3]
  words = struct.unpack("<12h", block[:24])
  return parameter_block, key, processor, words, block


def test_c3d_header_bytes_per_spec(tmp_path):
  positions = _motion(num_frames=7)
  path = motion_files.write_c3d(tmp_path / "h.c3d", positions, NAMES, 120.0)
  parameter_block, key, processor, words, block = _c3d_header_words(path)
  assert key == 0x50
  assert parameter_block >= 2  # The header is block 1.
  assert processor == 84  # 84 = Intel (little endian), the byte order unpacked here.
  assert words[1] == len(NAMES)  # Word 2: number of 3D points per frame.
  assert (words[3], words[4]) == (1, 7)  # Words 4-5: first and last frame, 1-based.
  scale = struct.unpack("<f", block[12:16])[0]  # Words 7-8: POINT:SCALE, negative = float data.
  assert scale < 0
  rate = struct.unpack("<f", block[20:24])[0]  # Words 11-12: the 3D frame rate.
  assert rate == 120.0


@pytest.mark.parametrize("up", [(0.0, 0.0, 1.0), (0.0, 0.0, -1.0), (1.0, 1.0, 0.0),
                                (0.0, -1.0, 0.0), (0.3, -0.2, 0.9)])
def test_trc_up_becomes_plus_y(tmp_path, up):
  up_unit = np.asarray(up) / np.linalg.norm(up)
  positions = np.array([[up_unit * 1000.0, [10.0, 20.0, 30.0]]])
  path = motion_files.write_trc(tmp_path / "up.trc", positions, ["top", "other"], 25, up=up)
  read = motion_files.read_trc(path)
  np.testing.assert_allclose(read["positions_mm"][0, 0], [0.0, 1000.0, 0.0], atol=1e-3)
  # A rotation keeps distances from the origin.
  assert np.linalg.norm(read["positions_mm"][0, 1]) == pytest.approx(
      np.linalg.norm([10.0, 20.0, 30.0]), abs=1e-3)
  rotation = motion_files.rotation_to_axis(up, (0, 1, 0))
  np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
  assert np.linalg.det(rotation) == pytest.approx(1.0)  # Right-handed stays right-handed.


def test_trc_up_none_writes_as_given(tmp_path):
  positions = np.array([[[0.0, 0.0, 1000.0]]])
  read = motion_files.read_trc(motion_files.write_trc(tmp_path / "z.trc", positions, ["a"], 25))
  np.testing.assert_allclose(read["positions_mm"], positions)


@pytest.mark.parametrize("writer", [motion_files.write_trc, motion_files.write_c3d,
                                    motion_files.write_csv])
def test_writers_reject_bad_inputs(tmp_path, writer):
  good = np.zeros((2, 2, 3))
  path = tmp_path / "bad.out"
  with pytest.raises(ValueError, match=r"\[T, J, 3\].*\(2, 2\)"):
    writer(path, np.zeros((2, 2)), ["a", "b"], 30)
  with pytest.raises(ValueError, match=r"\[T, J, 3\].*\(2, 2, 4\)"):
    writer(path, np.zeros((2, 2, 4)), ["a", "b"], 30)
  with pytest.raises(ValueError, match=r"3 joint_names .* for 2 joints"):
    writer(path, good, ["a", "b", "c"], 30)
  with pytest.raises(ValueError, match=r"fps must be .* > 0 .*got 0"):
    writer(path, good, ["a", "b"], 0)
  with pytest.raises(ValueError, match=r"fps must be .*got -25"):
    writer(path, good, ["a", "b"], -25)
  with pytest.raises(ValueError, match="unique"):
    writer(path, good, ["a", "a"], 30)
  with pytest.raises(ValueError, match=r"joint name 'a\\tb'"):
    writer(path, good, ["a\tb", "c"], 30)
  assert not path.exists()


def test_trc_rejects_bad_units_up_and_first_frame(tmp_path):
  good = np.zeros((2, 1, 3))
  with pytest.raises(ValueError, match="units must be .* got 'cm'"):
    motion_files.write_trc(tmp_path / "a.trc", good, ["a"], 30, units="cm")
  with pytest.raises(ValueError, match=r"up must be .*got \(0, 0, 0\)"):
    motion_files.write_trc(tmp_path / "a.trc", good, ["a"], 30, up=(0, 0, 0))
  with pytest.raises(ValueError, match="first_frame must be .*got 0"):
    motion_files.write_trc(tmp_path / "a.trc", good, ["a"], 30, first_frame=0)


def test_c3d_rejects_bad_residuals(tmp_path):
  with pytest.raises(ValueError, match=r"residuals must be \[T, J\] = \(2, 1\), got shape \(2,\)"):
    motion_files.write_c3d(tmp_path / "a.c3d", np.zeros((2, 1, 3)), ["a"], 30, residuals=[1, 2])


def test_failed_write_keeps_the_old_file(tmp_path):
  path = motion_files.write_csv(tmp_path / "keep.csv", np.zeros((1, 1, 3)), ["a"], 30)
  before = open(path).read()
  with pytest.raises(ValueError):
    motion_files.write_csv(path, np.zeros((1, 2, 3)), ["a"], 30)
  assert open(path).read() == before
  assert _no_temporaries(tmp_path) == []
