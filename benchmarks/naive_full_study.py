r"""NaiveFuse^full: how far a free linear fusion trained to convergence gets on held-out rigs.

  python -m benchmarks.naive_full_study                        # h36m, panoptic4, shelf, ring4
  python -m benchmarks.naive_full_study --rigs=h36m --fit      # also Adam from zero (paper start)

Per rig, on the same frames (configs/benchmark.py defaults: 1000 training frames of seed 7, the
test frames of seed 8, 32 px): No-Fusion, MetaFuse^0 (the calibrated geometry), the exact MSE
optimum of NaiveFuse (`finetune.naive_least_squares`) scaled by validation JDR
(`finetune.solve_naive_fusion`) and that start followed by the benchmark's NaiveFuse^full Adam
steps; the solver's start with the epipolar candidate (the matrices of the geometry estimated from
the training labels) and its Adam steps (the benchmark's default); with --fit the same Adam steps
from zero matrices. Cells: JDR / occluded JDR / MPJPE by triangulation (mm). The RPSM is
skipped.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.adaptation_study import benchmark_settings  # noqa: E402
from mf_tf.experiments import benchmark  # noqa: E402
from mf_tf.fusion import starts as fusion_starts  # noqa: E402
from mf_tf.geometry import rigs as rigs_lib  # noqa: E402
from mf_tf.train import finetune as finetune_lib  # noqa: E402

TRAIN_SEED, TEST_SEED = 7, 8


def _rig(name: str, settings: benchmark.BenchmarkSettings):
  if name == "panoptic4":  # The benchmark's first Panoptic trial: 4 of the 6 held-out cameras.
    full = rigs_lib.get_rig(settings.panoptic_rig)
    subset = benchmark.panoptic_subsets(full.num_views, settings.panoptic_views, 1,
                                        settings.seed)[0]
    return full.subset(subset)
  if name == "ring4":  # A procedural ring no pretraining saw (the adaptation study's).
    return rigs_lib.ring_rig(4, radius_mm=5200, height_mm=1900, seed=11)
  return rigs_lib.get_rig(name)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rigs", default="h36m,panoptic4,shelf,ring4")
  parser.add_argument("--fit", action="store_true", help="also Adam from zero (paper start)")
  args = parser.parse_args()
  settings = benchmark_settings()
  for name in args.rigs.split(","):
    start = time.time()
    rig = _rig(name, settings)
    train = benchmark.simulate(rig, settings.train_frames, TRAIN_SEED, settings)
    test = benchmark.simulate(rig, settings.test_frames, TEST_SEED, settings)

    def cell(layer):
      r = benchmark._eval(layer, test, rig, settings, None)  # pylint: disable=protected-access
      return (f"{r['jdr_mean']:.1f} / {r['jdr_occluded']:.1f} / "
              f"{r['mpjpe_triangulation_mm']:.1f}")

    def adam(layer):
      benchmark.finetune(layer, train["heatmaps"], train["joints2d"], settings.naive_full,
                         label=f"{name} naive^full", head_size_px=train.get("head_size"),
                         target_sigma=settings.target_sigma, seed=TRAIN_SEED, progress=False,
                         loss=settings.recipe.loss, selection=settings.recipe.selection)

    def naive(label):
      return fusion_starts.make_fusion_layer("naive", rig, settings.heatmap_size,
                                            temperature=settings.temperature, name=label)

    row = {"No-Fusion": cell(None),
           "MetaFuse^0": cell(benchmark.calibrated_layer(
               rig, settings.heatmap_size, settings.temperature, settings.line_width_px,
               settings.line_value))}
    layer = naive("naive_ls")
    solved = finetune_lib.solve_naive_fusion(
        layer, train["heatmaps"], train["joints2d"], target_sigma=settings.target_sigma,
        seed=TRAIN_SEED, head_size_px=train.get("head_size"))
    row[f"MSE optimum x{solved['scale']:g}"] = cell(layer)
    adam(layer)
    row["+ Adam"] = cell(layer)
    layer = naive("naive_epipolar")
    solved = finetune_lib.solve_naive_fusion(
        layer, train["heatmaps"], train["joints2d"], target_sigma=settings.target_sigma,
        seed=TRAIN_SEED, head_size_px=train.get("head_size"), epipolar_rig=rig,
        line_width_px=settings.line_width_px, line_value=settings.line_value)
    row[f"solved start ({solved['start']})"] = cell(layer)
    adam(layer)
    row["+ Adam (default)"] = cell(layer)
    if args.fit:
      layer = naive("naive_fit")
      adam(layer)
      row["Adam from zero"] = cell(layer)
    print(f"{name} ({rig.num_views} views, {time.time() - start:.0f} s): "
          + " | ".join(f"{k} {v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
  main()
