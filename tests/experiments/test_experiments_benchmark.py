"""Benchmark protocol: training helpers, aggregation, target checks, and the smoke run."""

import dataclasses
import importlib.util
import json
import math
import os

import numpy as np
import pytest

from mf_tf.data import world
from mf_tf.evaluation import plots
from mf_tf.experiments import benchmark
from mf_tf.fusion import starts as fusion_starts
from mf_tf.geometry import rigs
from mf_tf.modes import benchmark as benchmark_mode
from mf_tf.train import recipes

JOINTS = {"lelbow": 50.0, "relbow": 70.0, "lwrist": 40.0, "rwrist": 60.0, "lknee": 80.0,
          "rknee": 90.0, "lankle": 30.0, "rankle": 50.0}


def _result(jdr, visible=None, occluded=None, mpjpe=100.0, per_joint=None):
  return {"jdr_mean": jdr, "jdr_visible": jdr if visible is None else visible,
          "jdr_occluded": jdr if occluded is None else occluded,
          "mpjpe_triangulation_mm": mpjpe, "mpjpe_pictorial_mm": mpjpe,
          "jdr_per_joint": dict(per_joint or JOINTS), "num_frames": 10}


def _load_benchmark_config(repo_root, variant):
  path = os.path.join(repo_root, "configs", "benchmark.py")
  spec = importlib.util.spec_from_file_location("benchmark_config_under_test", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant)


def test_naive_training_lowers_the_loss_through_the_one_fit_loop():
  rig = rigs.get_rig("h36m").subset([0, 1])
  frames = world.simulate_frames(rig, 12, 3, "h36m17", 8)
  layer = fusion_starts.make_fusion_layer("naive", rig, 8, temperature=0.2, name="naive_fit")
  history = benchmark.finetune(layer, frames["heatmaps"], frames["joints2d"],
                               benchmark.FitSettings(25, 1e-2, 4, None), target_sigma=0.5, seed=0,
                               loss="ce", selection="val_loss", patience=100)
  assert all(math.isfinite(v) for v in history["loss"])
  assert history["loss"][-1] < 0.9 * history["loss"][0]


def test_finetune_turns_the_step_budget_into_epochs():
  rig = rigs.get_rig("h36m").subset([0, 1])
  frames = world.simulate_frames(rig, 10, 4, "h36m17", 8)
  layer = fusion_starts.make_fusion_layer("naive", rig, 8, temperature=0.2, name="naive_budget")
  history = benchmark.finetune(layer, frames["heatmaps"], frames["joints2d"],
                               benchmark.FitSettings(8, 1e-3, 4, None), target_sigma=0.5, seed=0)
  # 10 frames: 8 train (2 held out for validation); 8 steps x 4 frames = 4 epochs at most.
  assert 1 <= history["epochs"] <= 4 and len(history["val_loss"]) == history["epochs"]
  assert np.abs(layer.matrices.numpy()).max() > 0.0  # Trained in place.


def test_panoptic_subsets_are_distinct_and_reproducible():
  subsets = benchmark.panoptic_subsets(6, 4, 5, seed=3)
  assert len(set(subsets)) == 5 and all(len(s) == 4 for s in subsets)
  assert subsets == benchmark.panoptic_subsets(6, 4, 5, seed=3)
  with pytest.raises(ValueError, match="distinct"):
    benchmark.panoptic_subsets(6, 4, 16, seed=0)


def test_average_results_means_numbers_and_per_joint():
  a = {"no_fusion": {"0": _result(60.0, per_joint={"lwrist": 40.0})}}
  b = {"no_fusion": {"0": _result(70.0, mpjpe=120.0, per_joint={"lwrist": 60.0})}}
  merged = benchmark.average_results([a, b])["no_fusion"]["0"]
  assert merged["jdr_mean"] == pytest.approx(65.0)
  assert merged["mpjpe_pictorial_mm"] == pytest.approx(110.0)
  assert merged["jdr_per_joint"]["lwrist"] == pytest.approx(50.0)
  assert merged["trials"] == 2


def test_check_targets_reports_each_paper_finding():
  rig = {
      "no_fusion": {"0": _result(80.0, visible=90.0, occluded=50.0, mpjpe=100.0)},
      "metafuse": {"0": _result(83.0, mpjpe=95.0),
                   "50": _result(83.0, visible=91.0, occluded=60.0, mpjpe=85.0),
                   "500": _result(88.0)},
      "affine": {"50": _result(82.0), "500": _result(87.0)},
      "naive": {"50": _result(79.0), "500": _result(86.0), "full": _result(88.5)},
  }
  checks = benchmark.check_targets(rig, (50, 500))
  assert checks["metafuse50_gain"]["value"] == pytest.approx(3.0)
  assert checks["metafuse50_vs_affine50"]["value"] == pytest.approx(1.0)
  # The best-JDR fused method is NaiveFuse^full (88.5) at 100 mm: no MPJPE reduction.
  assert checks["best_fused_mpjpe_reduction"]["value"] == pytest.approx(0.0)
  assert not checks["best_fused_mpjpe_reduction"]["met"]
  rig["naive"]["full"] = _result(88.5, mpjpe=85.0)
  checks = benchmark.check_targets(rig, (50, 500))
  assert checks["best_fused_mpjpe_reduction"]["value"] == pytest.approx(0.15)
  assert all(check["met"] for check in checks.values()), checks
  rig["naive"]["50"] = _result(84.0)
  rig["metafuse"]["50"] = _result(82.0)
  checks = benchmark.check_targets(rig, (50, 500))
  assert not checks["order_k50"]["met"] and not checks["naive50_below_no_fusion"]["met"]
  assert not checks["metafuse50_gain"]["met"] and not checks["metafuse50_vs_naive50"]["met"]
  assert not checks["metafuse50_vs_metafuse0"]["met"]  # 82 < 83 - 0.5


def test_joint_group_jdr_averages_both_sides():
  assert benchmark.joint_group_jdr(_result(70.0), "wrist") == pytest.approx(50.0)
  assert benchmark.joint_group_jdr(_result(70.0), "mean") == pytest.approx(70.0)


def test_plot_jdr_vs_shots_writes_a_png(tmp_path):
  rig = {"no_fusion": {"0": _result(80.0)}, "metafuse": {"0": _result(81.0), "50": _result(83.0),
                                                          "100": _result(85.0)},
         "affine": {"50": _result(82.0), "100": _result(83.0)},
         "naive": {"50": _result(79.0), "100": _result(81.0), "full": _result(88.0)}}
  path = plots.plot_jdr_vs_shots(rig, str(tmp_path / "f7.png"), title="test")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_config_variants_build_settings(repo_root):
  for variant in (None, "smoke", "full", "images"):
    config = _load_benchmark_config(repo_root, variant)
    settings = benchmark_mode.settings_from_config(config)
    assert settings.train_frames >= max(settings.shots)
  with pytest.raises(ValueError, match="variant"):
    _load_benchmark_config(repo_root, "huge")


@pytest.mark.large
def test_smoke_benchmark_schema_and_floors(repo_root, tmp_path):
  config = _load_benchmark_config(repo_root, "smoke")
  payload = benchmark_mode.run(config, str(tmp_path))
  path = tmp_path / "benchmark" / "results.json"
  with open(path) as f:
    stored = json.load(f)
  assert set(stored) >= {"rigs", "config"}
  assert stored["config"]["benchmark"]["shots"] == "50"
  # Worker processes, each trial in two parts (rows without and with pretraining), merged.
  assert stored["config"]["benchmark"]["workers"] == 2
  assert set(stored["rigs"]) == {"panoptic_heldout6", "h36m"}
  keys = {"jdr_mean", "jdr_per_joint", "jdr_visible", "jdr_occluded", "mpjpe_triangulation_mm",
          "mpjpe_pictorial_mm"}
  expected = {"no_fusion": {"0"}, "metafuse": {"0", "50"}, "affine": {"50"},
              "naive": {"50", "full"}, "metafuse_paper": {"50"}}
  for rig, by_method in stored["rigs"].items():
    assert {m: set(k) for m, k in by_method.items()} == expected, rig
    for by_k in by_method.values():
      for result in by_k.values():
        assert keys <= set(result)
        assert 0.0 <= result["jdr_mean"] <= 100.0
        assert len(result["jdr_per_joint"]) == 17
        # Without the RPSM (config.benchmark.pictorial=False) its MPJPE is stored as null.
        numeric = keys - {"jdr_per_joint", "mpjpe_pictorial_mm"}
        assert all(isinstance(result[k], float) for k in numeric)
        assert (result["mpjpe_pictorial_mm"] is None) == (not config.benchmark.pictorial)
  gains = [stored["rigs"][r]["metafuse"]["50"]["jdr_mean"]
           - stored["rigs"][r]["no_fusion"]["0"]["jdr_mean"] for r in stored["rigs"]]
  assert max(gains) > 0.0, gains  # MetaFuse^50 above No-Fusion on a held-out rig.
  assert payload["rigs"].keys() == stored["rigs"].keys()
  for name in ("results.md", "figure7_h36m.png", "figure7_panoptic_heldout6.png",
               "metafuse_paper.npz"):
    assert (tmp_path / "benchmark" / name).is_file(), name


def test_frames_with_nonfinite_heatmaps_raise_naming_the_frame():
  frames = {"heatmaps": np.zeros((5, 2, 4, 4, 3), np.float32),
            "joints2d": np.full((5, 2, 3, 2), np.nan, np.float32)}  # Joints may be missing.
  benchmark._check_finite(frames, "rig")
  frames["heatmaps"][1, 0, 2, 2, 1] = np.nan
  frames["heatmaps"][3, 1, 0, 0, 0] = np.inf
  with pytest.raises(FloatingPointError, match=r"rig: simulated 'heatmaps' of frame 1 .*\[1, 3\]"):
    benchmark._check_finite(frames, "rig")


def _settings(repo_root, **changes):
  """The default config's benchmark settings with `changes`."""
  settings = benchmark_mode.settings_from_config(_load_benchmark_config(repo_root, None))
  return dataclasses.replace(settings, **changes)


def test_rows_split_by_whether_they_need_pretraining(repo_root):
  settings = _settings(repo_root)  # Self-calibrated MetaFuse^K: no pretraining.
  free = [("no_fusion", 0), ("metafuse", 0), ("metafuse", 50), ("naive", "full")]
  assert not any(benchmark.needs_pretraining(m, k, settings) for m, k in free)
  for method in ("affine", "naive", "metafuse_paper"):
    assert benchmark.needs_pretraining(method, 50, settings)
  shared = _settings(repo_root, recipe=recipes.PAPER)  # Meta-learned init.
  assert shared.row_recipes() == {"metafuse": recipes.PAPER}
  assert benchmark.needs_pretraining("metafuse", 50, shared)
  assert not benchmark.needs_pretraining("metafuse", 0, shared)
  with pytest.raises(ValueError, match="workers=0"):
    _settings(repo_root, workers=0)
  with pytest.raises(ValueError, match="worker_threads=-1"):
    _settings(repo_root, worker_threads=-1)
  with pytest.raises(ValueError, match="naive_full_solver='adam'"):
    _settings(repo_root, naive_full_solver="adam")


def test_merge_results_joins_the_parts_of_a_trial_in_shots_order(repo_root):
  unpretrained = {"no_fusion": {"0": _result(70)}, "naive": {"full": _result(80)},
                  "metafuse": {"0": _result(82), "50": _result(83)}}
  pretrained = {"naive": {"500": _result(72), "50": _result(66)}, "affine": {"50": _result(75)}}
  merged = benchmark.merge_results([unpretrained, pretrained])
  assert set(merged) == set(benchmark.METHODS)
  assert list(merged["naive"]) == ["50", "500", "full"]
  assert merged["naive"]["full"]["jdr_mean"] == 80 and merged["affine"]["50"]["jdr_mean"] == 75
  assert list(merged["metafuse"]) == ["0", "50"] and merged["metafuse_paper"] == {}
  with pytest.raises(ValueError, match="part='half'"):
    benchmark.benchmark_rig(rigs.get_rig("h36m"), None, _settings(repo_root), seed=0,
                            part="half")
  with pytest.raises(ValueError, match="needs the pretrained models"):
    benchmark.benchmark_rig(rigs.get_rig("h36m"), None, _settings(repo_root), seed=0,
                            part="pretrained")
