"""End-to-end demo: the Figure 6 helpers and a tiny run of --mode=demo."""

import importlib.util
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mf_tf.experiments import demo
from mf_tf.fusion import layers
from mf_tf.modes import demo as demo_mode


def test_choose_example_prefers_an_occluded_joint_that_fusion_corrects():
  truth = np.zeros((2, 2, 3, 2))
  initial = truth.copy()
  fused = truth.copy()
  visibility = np.ones((2, 2, 3))
  head = np.full((2, 2), 4.0)  # Threshold 2 px.
  visibility[1, 0, 2] = 0  # Occluded, wrong before (5 px), right after (1 px): the choice.
  initial[1, 0, 2] = (5.0, 0.0)
  fused[1, 0, 2] = (1.0, 0.0)
  visibility[0, 1, 1] = 0  # Occluded, larger gain but still wrong after fusion.
  initial[0, 1, 1] = (9.0, 0.0)
  fused[0, 1, 1] = (3.0, 0.0)
  initial[1, 1, 0] = (8.0, 0.0)  # Visible: never preferred.
  assert demo.choose_example(initial, fused, truth, visibility, head) == (1, 0, 2)


def test_figure6_panels_sum_to_the_layer_output():
  size, views, joints = 6, 3, 2
  rng = np.random.default_rng(0)
  heatmaps = rng.random((2, views, size, size, joints)).astype(np.float32)
  layer = layers.AffineFusion(views, size, base_init="line", base_scale=0.3)
  layer.build((None, views, size, size, joints))
  layer.theta.assign(layer.theta + rng.normal(0, 0.05, layer.theta.shape).astype(np.float32))
  matrices = layer.fusion_matrices().numpy()
  joints2d = rng.uniform(0, size - 1, (2, views, joints, 2))
  rows, warped = demo.figure6_panels(heatmaps, {"m": matrices}, joints2d, 1, 2, 1, size, 1.0)
  fused = layer(tf.constant(heatmaps)).numpy()[1, 2, :, :, 1]
  titles = [title for row in rows for title, _ in row]
  assert titles[:3] == ["ground truth", "initial heatmap", "fused (m)"]
  np.testing.assert_allclose(rows[0][2][1], fused, rtol=1e-4, atol=1e-5)
  assert sorted(warped["m"]) == [0, 1]
  np.testing.assert_allclose(rows[0][0][1].max(), 1.0, atol=0.2)  # Gaussian truth, peak ~1.


@pytest.mark.large
def test_demo_smoke_run_writes_its_outputs(repo_root, tmp_path):
  spec = importlib.util.spec_from_file_location("default_config_under_test",
                                                os.path.join(repo_root, "configs", "default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("smoke")
  out = demo_mode.run(config, str(tmp_path))
  folder = tmp_path / "demo"
  for name in ("results.json", "results.md", "methods.png", "figure6.png",
               "meta_params_paper.npz"):
    assert (folder / name).is_file(), name
  with open(folder / "results.json") as f:
    stored = json.load(f)
  expected = {"No-Fusion", "MetaFuse^0 (calibrated)", "MetaFuse^50", "MetaFuse^50 (paper)"}
  if config.demo.calibrated_variant:
    expected.add("MetaFuse^50-calibrated")
    assert (folder / "meta_params_calibrated.npz").is_file()
  assert set(stored["methods"]) == expected
  for result in stored["methods"].values():
    assert 0.0 <= result["jdr_mean"] <= 100.0
    assert result["num_frames"] == config.demo.test_frames
  assert out["example"]["joint"] in stored["methods"]["No-Fusion"]["jdr_per_joint"]
  # MetaFuse^50 starts from the labels' epipolar geometry and keeps it unless validation improves.
  assert stored["methods"]["MetaFuse^50"]["jdr_mean"] >= stored["methods"]["No-Fusion"]["jdr_mean"]
  assert set(out["timings"]) >= {"metatrain_s", "finetune_s", "evaluate_s", "plots_s"}
