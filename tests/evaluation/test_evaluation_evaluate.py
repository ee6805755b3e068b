"""evaluate_fusion with layers built directly, result files, and --mode=evaluate on :smoke."""

import json
import os

import numpy as np
import pytest

from configs import default
from mf_tf.data import world
from mf_tf.data.codec import HeatmapCodec
from mf_tf.evaluation import evaluate
from mf_tf.evaluation import pictorial
from mf_tf.evaluation import triangulate
from mf_tf.fusion import layers
from mf_tf.geometry import rigs
from mf_tf.modes import evaluate as evaluate_mode

HEATMAP_SIZE = 32
OPTIONS = pictorial.PictorialOptions(coarse_bins=10, refine_iterations=4)


@pytest.fixture(scope="module")
def setup():
  rig = rigs.get_rig("h36m")
  frames = world.simulate_frames(rig, 4, seed=21, heatmap_size=HEATMAP_SIZE)
  training = world.simulate_frames(rig, 50, seed=22, heatmap_size=HEATMAP_SIZE,
                                   return_heatmaps=False)
  limb_lengths = pictorial.mean_limb_lengths(training["joints3d"], "h36m17")
  return rig, frames, limb_lengths


class _Oracle:
  """A 'fusion' that outputs clean Gaussians at the true joints (an upper bound)."""

  def __init__(self, frames):
    self.clean, _ = HeatmapCodec(HEATMAP_SIZE).encode(frames["joints2d"])
    self.start = 0

  def __call__(self, heatmaps):
    out = self.clean[self.start:self.start + heatmaps.shape[0]]
    self.start += heatmaps.shape[0]
    return out


def test_schema_and_no_fusion_equivalence(setup):
  rig, frames, limb_lengths = setup
  none = evaluate.evaluate_fusion(None, frames, rig, "h36m17", 0.2, limb_lengths=limb_lengths,
                                  pictorial_options=OPTIONS)
  for key in evaluate.RESULT_KEYS:
    assert key in none
  assert none["num_frames"] == 4
  assert list(none["jdr_per_joint"])[:2] == ["pelvis", "rhip"]
  assert 0.0 <= none["jdr_occluded"] <= none["jdr_visible"] <= 100.0
  assert np.isfinite(none["mpjpe_triangulation_mm"]) and np.isfinite(none["mpjpe_pictorial_mm"])
  layer = evaluate.evaluate_fusion(layers.NoFusion(), frames, rig, "h36m17", 0.2,
                                   limb_lengths=limb_lengths, pictorial_options=OPTIONS,
                                   batch_size=3)
  assert layer["jdr_per_joint"] == pytest.approx(none.pop("jdr_per_joint"))
  layer.pop("jdr_per_joint")
  assert layer == pytest.approx(none, nan_ok=True)


def test_better_heatmaps_score_better(setup):
  rig, frames, limb_lengths = setup
  baseline = evaluate.evaluate_fusion(None, frames, rig, "h36m17", 0.2,
                                      limb_lengths=limb_lengths, pictorial_options=OPTIONS)
  oracle = evaluate.evaluate_fusion(_Oracle(frames), frames, rig, "h36m17", 0.2,
                                    limb_lengths=limb_lengths, pictorial_options=OPTIONS,
                                    batch_size=3)
  assert oracle["jdr_mean"] == pytest.approx(100.0)
  assert oracle["jdr_mean"] > baseline["jdr_mean"]
  # At 32 x 32 a heatmap pixel is ~140 mm here; clean heatmaps still give a few cm at most.
  assert oracle["mpjpe_triangulation_mm"] < 5.0
  assert oracle["mpjpe_pictorial_mm"] < 30.0
  assert oracle["mpjpe_pictorial_mm"] < baseline["mpjpe_pictorial_mm"]


def test_affine_fusion_layer_runs(setup):
  rig, frames, limb_lengths = setup
  layer = layers.AffineFusion(rig.num_views, HEATMAP_SIZE)
  result = evaluate.evaluate_fusion(layer, frames, rig, "h36m17", 0.2,
                                    limb_lengths=limb_lengths, pictorial_options=OPTIONS)
  assert 0.0 <= result["jdr_mean"] <= 100.0
  assert np.isfinite(result["mpjpe_pictorial_mm"])


def test_evaluate_rejects_missing_fields(setup):
  rig, frames, _ = setup
  partial = {k: v for k, v in frames.items() if k != "head_size"}
  with pytest.raises(ValueError, match="head_size"):
    evaluate.evaluate_fusion(None, partial, rig, "h36m17")


def test_write_results(tmp_path):
  result = {"jdr_mean": 81.25, "jdr_per_joint": {"pelvis": 100.0, "head": float("nan")},
            "jdr_visible": 90.0, "jdr_occluded": 40.0, "mpjpe_triangulation_mm": 101.5,
            "mpjpe_pictorial_mm": 70.25, "num_frames": 3}
  paths = evaluate.write_results({"no_fusion": result}, str(tmp_path), {"rig": "h36m"})
  with open(paths["json"]) as f:
    payload = json.load(f)
  assert payload["metadata"] == {"rig": "h36m"}
  assert payload["methods"]["no_fusion"]["jdr_mean"] == 81.25
  assert payload["methods"]["no_fusion"]["jdr_per_joint"]["head"] is None  # NaN -> null
  with open(paths["markdown"]) as f:
    text = f.read()
  assert "| no_fusion | 3 | 81.2 | 90.0 | 40.0 | 101.5 | 70.2 |" in text
  assert "| head | n/a |" in text


@pytest.mark.large
def test_evaluate_mode_smoke(tmp_path):
  config = default.get_config("smoke")
  config.evaluate.num_frames = 3
  config.evaluate.methods = "no_fusion,calibrated,finetuned"  # no checkpoint: finetuned skipped
  results = evaluate_mode.run(config, str(tmp_path))
  assert set(results) == {"no_fusion", "calibrated"}
  out = os.path.join(str(tmp_path), "evaluate", rigs.get_rig(config.rig.target).name)
  with open(os.path.join(out, "results.json")) as f:
    payload = json.load(f)
  assert payload["metadata"]["num_frames"] == 3
  assert set(payload["methods"]) == {"no_fusion", "calibrated"}
  assert os.path.exists(os.path.join(out, "results.md"))
  config.evaluate.checkpoint = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="missing"):
    evaluate_mode.run(config, str(tmp_path))


def test_robust_triangulation_drops_the_view_that_disagrees():
  rig = rigs.get_rig("h36m")
  size = 64
  point = np.array([[[100.0, -200.0, 900.0]]])  # [1, 1, 3] mm
  coords = []
  for camera in rig.cameras:
    uv, _ = camera.project(point[0])
    coords.append(uv * [size / camera.width, size / camera.height])
  coords = np.stack(coords)[None]  # [1, V, 1, 2]
  exact = triangulate.triangulate_heatmap_joints(coords, None, rig, size)
  np.testing.assert_allclose(exact, point, atol=1e-3)
  wrong = coords.copy()
  wrong[0, 2, 0] += [6.0, -4.0]  # One gross 2D error (a distractor peak).
  plain = triangulate.triangulate_heatmap_joints(wrong, None, rig, size)
  robust = triangulate.triangulate_heatmap_joints(wrong, None, rig, size, outlier_px=2.0)
  assert np.linalg.norm(plain - point) > 50.0
  np.testing.assert_allclose(robust, point, atol=1e-3)
  # Agreeing views are all kept: the robust result equals the plain one.
  np.testing.assert_allclose(
      triangulate.triangulate_heatmap_joints(coords, None, rig, size, outlier_px=2.0), exact)
  with pytest.raises(ValueError, match="outlier_px"):
    triangulate.triangulate_heatmap_joints(coords, None, rig, size, outlier_px=0.0)
