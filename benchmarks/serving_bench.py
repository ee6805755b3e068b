r"""Serving latency of an exported 4-view rig: backbone versus fusion, dense versus sparse top-k.

  python -m benchmarks.serving_bench                       # paper shapes: ResNet50, 256 -> 64, 17
  python -m benchmarks.serving_bench --reps=3 --frames=64  # quicker
  python -m benchmarks.serving_bench --backbone=mobilenetv2_035 --image_size=128  # smoke

Exports the rig twice (dense fusion matrices and sparse top-k), reloads both SavedModels with
`tf.saved_model.load`, and times per frame (batch 1, V views), interleaved over --reps
repetitions after one warm-up call (`benchmarks.timing`):
  frame     the `serving_default` signature: uint8 images -> everything (2D, fused, 3D);
  post      the `heatmaps` signature: fusion + decoding + undistortion + triangulation;
  fusion    Eq. 1 alone, as served (`ExportModule.fuse`: dense matmul, or for top-k one
            sparse-dense product per target view);
  backbone  the Keras backbone alone on the V images (tf.function).
Ratios (fusion / frame, ...) are medians of the per-repetition ratios of this one run. Goals,
served without XLA (as TF Serving runs a SavedModel unless configured): sparse fusion at most 5%
of the frame, the sparse SavedModel at most 1/4 of the dense one, and sparse JDR within 0.2
points of dense on the simulated frames (one-sided: sparse may score higher).

Fusion weights are MetaFuse^0 (epipolar-line theta and line base from the rig's calibration,
`mf_tf.fusion.calibrated`), so fusion does real cross-view work; the backbone's weights are
random (latency does not depend on them). Dense versus sparse agreement is measured on simulated
detector heatmaps of the same rig (`mf_tf.data.world.simulate_frames`): the mean distance between
the keypoints of both, in heatmap pixels, and the JDR of initial, dense-fused and sparse-fused
keypoints against the true projections.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import timing  # noqa: E402
from configs import default as default_config  # noqa: E402
from mf_tf.data import world  # noqa: E402
from mf_tf.evaluation import metrics  # noqa: E402
from mf_tf.fusion import calibrated  # noqa: E402
from mf_tf.fusion.layers import AffineFusion  # noqa: E402
from mf_tf.geometry import rigs  # noqa: E402
from mf_tf.geometry.rig import Rig  # noqa: E402
from mf_tf.models.backbone import build_backbone  # noqa: E402
from mf_tf.modes import export as export_mode  # noqa: E402
from mf_tf.serving import export  # noqa: E402


def _rig(name: str, num_views: int) -> Rig:
  if name.startswith("ring"):
    return rigs.ring_rig(num_views, name=f"ring{num_views}")
  rig = rigs.get_rig(name)
  return rig.subset(range(num_views), name=f"{name}{num_views}") if rig.num_views > num_views \
      else rig


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rig", default="h36m", help="built-in rig, rig file, or 'ring'")
  parser.add_argument("--views", type=int, default=4)
  parser.add_argument("--backbone", default="resnet50")
  parser.add_argument("--image_size", type=int, default=256)
  parser.add_argument("--joints", type=int, default=17)
  parser.add_argument("--top_k", type=int, default=128)
  parser.add_argument("--reps", type=int, default=5)
  parser.add_argument("--frames", type=int, default=128, help="simulated frames for agreement")
  parser.add_argument("--line_value", type=float, default=0.3, help="MetaFuse^0 line peak")
  args = parser.parse_args()

  devices = [d.device_type for d in tf.config.list_logical_devices()]
  rig = _rig(args.rig, args.views)
  heatmap_size = args.image_size // 4
  print(f"devices {devices}; os.cpu_count {os.cpu_count()}")
  print(f"rig {rig.name} ({rig.num_views} views), backbone {args.backbone}, images "
        f"{args.image_size}x{args.image_size} -> heatmaps {heatmap_size}x{heatmap_size}, "
        f"{args.joints} joints, batch 1 frame, top_k {args.top_k}")

  backbone = build_backbone(args.backbone, args.image_size, args.joints)
  fusion = AffineFusion(rig.num_views, heatmap_size, name="fusion")
  fusion.assign_parameters(*calibrated.calibrated_parameters(rig, heatmap_size,
                                                             value=args.line_value))
  kinds = {"dense": fusion.materialize(),
           "sparse": fusion.materialize(top_k=args.top_k)}
  matrix_mb = {"dense": kinds["dense"].matrices.numpy().nbytes / 2**20,
               "sparse": (kinds["sparse"].values.numpy().nbytes
                          + kinds["sparse"].indices.numpy().nbytes) / 2**20}
  del fusion

  rng = np.random.default_rng(0)
  images = tf.constant(rng.integers(0, 256, (1, rig.num_views, args.image_size, args.image_size,
                                             3)).astype(np.uint8))
  heatmaps = tf.constant(rng.random((1, rig.num_views, heatmap_size, heatmap_size, args.joints)),
                         tf.float32)
  backbone_fn = tf.function(lambda x: backbone(x, training=False))
  flat_images = tf.reshape(tf.cast(images, tf.float32), [-1, args.image_size, args.image_size, 3])

  batching_parameters = export_mode.batching_settings(default_config.get_config())
  with tempfile.TemporaryDirectory() as export_dir:
    loaded, timers, sizes = {}, {"backbone": lambda: backbone_fn(flat_images)}, {}
    for kind, materialized in kinds.items():
      start = time.perf_counter()
      kind_rig = Rig(f"{rig.name}_{kind}", rig.cameras, up=rig.up, floor=rig.floor)
      path = export.export_rig(backbone, materialized, kind_rig, export_dir, warmup=False,
                               batching=batching_parameters)
      size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
      sizes[kind] = size
      print(f"exported {kind:6s} in {time.perf_counter() - start:5.1f} s, SavedModel "
            f"{size / 2**20:7.1f} MiB (materialized fusion {matrix_mb[kind]:6.1f} MiB)")
      loaded[kind] = tf.saved_model.load(path)
      signatures = loaded[kind].signatures
      module = export.ExportModule(backbone, materialized, kind_rig)  # Same constants as served.
      stored = sum(v.numpy().nbytes for v in (
          tf.nest.flatten(module.fusion_blocks) if kind == "sparse"
          else [materialized.matrices])) / 2**20
      print(f"  fusion constants as served: {stored:.1f} MiB")
      fuse_fn = tf.function(module.fuse)
      timers[f"frame_{kind}"] = (
          lambda s=signatures: s["serving_default"](images=images))
      timers[f"post_{kind}"] = lambda s=signatures: s["heatmaps"](heatmaps=heatmaps)
      timers[f"fusion_{kind}"] = lambda f=fuse_fn: f(heatmaps)

    times = timing.interleave(timers, args.reps)

    print("\nper frame (batch 1):")
    for name, values in times.items():
      print(f"  {name:14s} {values.summary()}")
    med = {name: values.median for name, values in times.items()}

    def share(name, kind):  # Of the frame time, paired per repetition.
      return timing.paired_ratio(times[name], times[f"frame_{kind}"])

    summary = {}
    for kind in kinds:
      summary[kind] = {
          "frame_ms": 1e3 * med[f"frame_{kind}"], "post_ms": 1e3 * med[f"post_{kind}"],
          "fusion_ms": 1e3 * med[f"fusion_{kind}"], "backbone_ms": 1e3 * med["backbone"],
          "fusion_share": share(f"fusion_{kind}", kind),
          "post_share": share(f"post_{kind}", kind),
          "backbone_share": share("backbone", kind),
      }
    print("\nratios (paired medians of this run):")
    for kind in kinds:
      s = summary[kind]
      print(f"  {kind:6s} fusion / frame {100 * s['fusion_share']:5.1f}%; fusion+decode+3D / "
            f"frame {100 * s['post_share']:5.1f}%; backbone / frame "
            f"{100 * s['backbone_share']:5.1f}%")
    print(f"  sparse / dense fusion time "
          f"{timing.paired_ratio(times['fusion_sparse'], times['fusion_dense']):.3f}")
    print(f"  dense  fusion / frame {100 * summary['dense']['fusion_share']:.1f}% (no goal)")
    timing.report_goal("sparse fusion / frame, no XLA", 100 * summary["sparse"]["fusion_share"],
                       5.0, "%")
    summary["size_ratio"] = sizes["sparse"] / sizes["dense"]
    timing.report_goal("sparse / dense SavedModel size", summary["size_ratio"], 0.25, "")

    # Dense versus sparse on simulated detector heatmaps (same rig, MetaFuse^0 fusion).
    if args.frames > 0:
      sim = world.simulate_frames(rig, args.frames, seed=1, heatmap_size=heatmap_size)
      if sim["heatmaps"].shape[-1] != args.joints:
        print(f"\nagreement skipped: the simulated world has {sim['heatmaps'].shape[-1]} joints")
      else:
        keypoints = {}
        for kind in kinds:
          out = [loaded[kind].signatures["heatmaps"](heatmaps=tf.constant(chunk))
                 for chunk in np.array_split(sim["heatmaps"], max(1, args.frames // 16))]
          keypoints[kind] = np.concatenate([o["keypoints_heatmap"].numpy() for o in out])
          if kind == "dense":
            keypoints["initial"] = np.concatenate(
                [o["initial_keypoints_heatmap"].numpy() for o in out])
        distance = np.linalg.norm(keypoints["dense"] - keypoints["sparse"], axis=-1)
        inside = np.all((sim["joints2d"] >= 0) & (sim["joints2d"] < heatmap_size), axis=-1)
        rates = {name: metrics.jdr(kp, sim["joints2d"], sim["head_size"], inside)["mean"]
                 for name, kp in keypoints.items()}
        summary["agreement"] = {"frames": args.frames,
                                "keypoint_diff_px_mean": float(distance.mean()),
                                "keypoint_moved_fraction": float(np.mean(distance > 0.5)),
                                "jdr": rates}
        print(f"\ndense vs sparse top-{args.top_k} on {args.frames} simulated frames: mean "
              f"keypoint difference {distance.mean():.4f} heatmap px, moved > 0.5 px "
              f"{100 * np.mean(distance > 0.5):.1f}%; JDR initial {rates['initial']:.2f}, "
              f"dense {rates['dense']:.2f}, sparse {rates['sparse']:.2f} "
              f"(dense - sparse {rates['dense'] - rates['sparse']:+.2f} points)")
        # One-sided: sparse may not lose more than 0.2 points (top-k may also sharpen the lines).
        timing.report_goal("JDR lost by sparse (dense - sparse, points)",
                           rates["dense"] - rates["sparse"], 0.2, "")
  print("\n" + json.dumps(summary, indent=1))


if __name__ == "__main__":
  main()
