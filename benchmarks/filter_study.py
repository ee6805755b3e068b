r"""Which 3D track filter to use by default: accuracy, jitter, lag and bone lengths per variant.

  python -m benchmarks.filter_study
  python -m benchmarks.filter_study --tracks=run1.npz --tracks=run2.npz --output=/tmp/filters.json

(a) Real motion with known truth: the CMU Panoptic 3D poses of 160906_band1 and 160906_band2
    (hdPose3d_stage1_coco19, read by `mf_tf.data.panoptic.read_body_scene`; three people per band,
    20 consecutive frames each at 29.97 fps, so 6 tracks of 0.67 s: short, and the filters' edge
    handling weighs in every number). Each track gets Gaussian noise of --noise_mm per coordinate
    (the level of markerless triangulation) with seeds 0..--seeds-1, and --drop_frames whole
    interior frames are dropped; the drops are filled by `fill_gaps` (cubic, up to 5 frames),
    then every variant filters the track. Measured against the Panoptic poses (themselves a
    multi-camera reconstruction, not motion capture): MPJPE (mm), jitter (mean |acceleration|,
    m/s^2), lag (frames, `lag_frames` of the velocities, max 3), bone-length std (mm, coco19
    limbs). "none" is the track before filtering; the "truth" row is the Panoptic poses alone.
    The band members move slowly, which favours heavy smoothing and pins lag down poorly, so a
    noise-free 2 Hz probe sine adds each variant's lag and amplitude gain on brisk motion.
(b) --tracks FILE.npz (arrays positions [T, J, 3] mm, fps, limbs [B, 2]; reconstructed tracks
    from real videos, no truth): jitter, bone-length std, lag against the unfiltered track and
    the mean displacement the filter makes (mm). Where the unfiltered velocities are mostly noise,
    the lag of a causal filter reads near the peak of its impulse response (0 for One Euro), not
    its delay on motion: read the probe's lag for that.

Printed as markdown tables; --output writes them as JSON. The best variant of (a) is the one with
the lowest MPJPE averaged over noise levels among those with |lag| <= 1 frame (on the tracks and
on the probe); the default (`filtering.DEFAULT_METHOD`) is the best of those that also keep 98 %
of the 2 Hz probe's amplitude.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os

from absl import app
from absl import flags
import numpy as np

from mf_tf.data import joints as joints_lib
from mf_tf.data import panoptic
from mf_tf.reconstruct import filtering

_DATA = "/work/shared/data/panoptic"  # overridable with --panoptic_root
_SEQUENCES = ("160906_band1", "160906_band2")
PANOPTIC_FPS = 29.97  # fpsType "hd_29_97" in every body3DScene file
GAP_FRAMES = 5  # longest gap fill_gaps closes before filtering
MAX_LAG = 3  # frames searched by lag_frames; 20-frame tracks leave 13 velocities to compare

flags.DEFINE_string("panoptic_root", _DATA, "Folder holding the Panoptic sequences.")
flags.DEFINE_multi_string("tracks", [], "Reconstructed track files (.npz: positions, fps, limbs).")
flags.DEFINE_list("noise_mm", ["15", "30"], "Noise std per coordinate, mm (one column group each).")
flags.DEFINE_integer("seeds", 5, "Noise draws per track and noise level (seeds 0..n-1).")
flags.DEFINE_integer("drop_frames", 2, "Interior frames dropped per track before gap filling.")
flags.DEFINE_string("output", None, "Write the tables as JSON to this path.")
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row: a filter method of `filtering.FILTERS` and its parameters."""
  name: str
  method: str
  params: tuple[tuple[str, float], ...] = ()

  def apply(self, positions: np.ndarray, fps: float) -> np.ndarray:
    return filtering.filter_track(positions, fps, self.method, **dict(self.params))


VARIANTS = (
    Variant("none", "none"),
    Variant("butterworth 4 Hz", "butterworth", (("cutoff_hz", 4.0), ("order", 4))),
    Variant("butterworth 6 Hz", "butterworth", (("cutoff_hz", 6.0), ("order", 4))),
    Variant("butterworth 8 Hz", "butterworth", (("cutoff_hz", 8.0), ("order", 4))),
    Variant("savgol 7/2", "savgol", (("window_frames", 7), ("polyorder", 2))),
    Variant("savgol 9/2", "savgol", (("window_frames", 9), ("polyorder", 2))),
    Variant("savgol 11/2", "savgol", (("window_frames", 11), ("polyorder", 2))),
    Variant("one_euro 1 Hz b=0", "one_euro", (("min_cutoff_hz", 1.0), ("beta", 0.0))),
    Variant("one_euro 1.5 Hz b=0.005", "one_euro", (("min_cutoff_hz", 1.5), ("beta", 0.005))),
    Variant("one_euro 1 Hz b=0.02", "one_euro", (("min_cutoff_hz", 1.0), ("beta", 0.02))),
)
_METRICS = ("mpjpe_mm", "jitter_m_s2", "lag_frames", "bone_std_mm")
PROBE_HZ = 2.0  # a brisk limb movement (a wave, a step); the Panoptic band members move slowly
PROBE_FRAMES = 120
# The default must keep 98 % of a 2 Hz movement: the band tracks reward over-smoothing (slow
# motion, 20 frames), which would flatten a brisk wave or step by more than it removes noise.
MIN_PROBE_GAIN = 0.98


def probe(variant: Variant, fps: float = PANOPTIC_FPS) -> dict[str, float]:
  """Noise-free 2 Hz sine (300 mm amplitude, 4 s): lag (frames) and amplitude gain of a variant.

  The 20-frame Panoptic tracks move slowly, so their velocities pin the lag down poorly; this
  probe measures each variant's lag and how much of a fast movement it keeps, on the middle 2 s.
  """
  t = np.arange(PROBE_FRAMES) / fps
  wave = 300.0 * np.sin(2 * np.pi * PROBE_HZ * t)
  track = np.stack([wave, np.zeros_like(wave), np.zeros_like(wave)], axis=-1)[:, None, :]
  out = variant.apply(track, fps)
  middle = slice(PROBE_FRAMES // 4, 3 * PROBE_FRAMES // 4)
  design = np.stack([np.sin(2 * np.pi * PROBE_HZ * t), np.cos(2 * np.pi * PROBE_HZ * t)], 1)
  coefficients, *_ = np.linalg.lstsq(design[middle], out[middle, 0, 0], rcond=None)
  return {"probe_lag_frames": filtering.lag_frames(track, out, MAX_LAG),
          "probe_gain_2hz": float(np.hypot(*coefficients) / 300.0)}


def read_panoptic_tracks(root: str) -> list[np.ndarray]:
  """One [T, 19, 3] mm track per (sequence, person id); raises if frames are not consecutive."""
  tracks = []
  for sequence in _SEQUENCES:
    paths = sorted(glob.glob(os.path.join(root, sequence, panoptic.POSE_DIR, "body3DScene_*.json")))
    if not paths:
      raise FileNotFoundError(f"no body3DScene_*.json under {os.path.join(root, sequence)}: "
                              f"expected <root>/<sequence>/{panoptic.POSE_DIR}/")
    frames = [int(os.path.basename(p)[len("body3DScene_"):-len(".json")]) for p in paths]
    if np.any(np.diff(frames) != 1):
      raise ValueError(f"{sequence}: frames {frames} are not consecutive")
    scenes = [panoptic.read_body_scene(p) for p in paths]
    ids = sorted(set().union(*(set(body_ids.tolist()) for _, _, body_ids in scenes)))
    for person in ids:
      track = np.full((len(paths), 19, 3), np.nan)
      for t, (joints3d, _, body_ids) in enumerate(scenes):
        rows = np.flatnonzero(body_ids == person)
        if rows.size:
          track[t] = joints3d[rows[0]]
      tracks.append(track)
  return tracks


def _metrics(truth: np.ndarray, estimate: np.ndarray, fps: float, limbs) -> dict[str, float]:
  return {
      "mpjpe_mm": filtering.mpjpe(truth, estimate),
      "jitter_m_s2": filtering.jitter(estimate, fps),
      "lag_frames": filtering.lag_frames(truth, estimate, MAX_LAG),
      "bone_std_mm": filtering.bone_length_variation(estimate, limbs)[0],
  }


def study_panoptic(tracks: list[np.ndarray], noise_levels: list[float], seeds: int,
                   drop_frames: int) -> dict:
  """Part (a): {noise: {variant: {metric: mean over tracks and seeds}}} plus the truth row."""
  limbs = joints_lib.get_joint_set("coco19").limbs
  results = {}
  for noise in noise_levels:
    rows = {v.name: {m: [] for m in _METRICS} for v in VARIANTS}
    for index, truth in enumerate(tracks):
      for seed in range(seeds):
        rng = np.random.default_rng([int(noise), index, seed])
        noisy = truth + rng.normal(scale=noise, size=truth.shape)
        dropped = rng.choice(np.arange(1, len(truth) - 1), size=drop_frames, replace=False)
        noisy[dropped] = np.nan
        filled, _ = filtering.fill_gaps(noisy, GAP_FRAMES)
        for variant in VARIANTS:
          for name, value in _metrics(truth, variant.apply(filled, PANOPTIC_FPS),
                                      PANOPTIC_FPS, limbs).items():
            rows[variant.name][name].append(value)
    results[f"{noise:g}"] = {v: {m: float(np.nanmean(x)) for m, x in r.items()}
                             for v, r in rows.items()}
  truth_row = {
      "mpjpe_mm": 0.0,
      "jitter_m_s2": float(np.mean([filtering.jitter(t, PANOPTIC_FPS) for t in tracks])),
      "lag_frames": 0.0,
      "bone_std_mm": float(np.mean([filtering.bone_length_variation(t, limbs)[0]
                                    for t in tracks])),
  }
  return {"noise": results, "truth": truth_row, "probe": {v.name: probe(v) for v in VARIANTS}}


def best_variant(study: dict, max_lag_frames: float = 1.0, min_gain: float | None = None) -> dict:
  """The lowest MPJPE averaged over noise levels among variants with |lag| <= max_lag_frames.

  The lag must hold on the Panoptic tracks (every noise level) and on the 2 Hz probe; with
  min_gain, the variant must also keep at least that share of the probe's amplitude.
  """
  levels = list(study["noise"])
  mean = lambda name, metric: float(np.mean([study["noise"][n][name][metric] for n in levels]))
  probe_row = study["probe"]
  eligible = [v.name for v in VARIANTS
              if all(abs(study["noise"][n][v.name]["lag_frames"]) <= max_lag_frames
                     for n in levels)
              and abs(probe_row[v.name]["probe_lag_frames"]) <= max_lag_frames
              and (min_gain is None or probe_row[v.name]["probe_gain_2hz"] >= min_gain)]
  ranked = sorted(eligible, key=lambda name: mean(name, "mpjpe_mm"))
  best, runner_up = ranked[0], ranked[1]
  return {
      "best": best,
      "mpjpe_mm": mean(best, "mpjpe_mm"),
      "mpjpe_none_mm": mean("none", "mpjpe_mm"),
      "runner_up": runner_up,
      "mpjpe_runner_up_mm": mean(runner_up, "mpjpe_mm"),
      "jitter_m_s2": mean(best, "jitter_m_s2"),
      "jitter_none_m_s2": mean("none", "jitter_m_s2"),
      "bone_std_mm": mean(best, "bone_std_mm"),
      "probe_gain_2hz": probe_row[best]["probe_gain_2hz"],
      "excluded": [v.name for v in VARIANTS if v.name not in eligible],
  }


def _print_best(title: str, best: dict) -> None:
  saved = best["mpjpe_none_mm"] - best["mpjpe_mm"]
  print(f"\n{title}: {best['best']}: MPJPE {best['mpjpe_mm']:.2f} mm (unfiltered "
        f"{best['mpjpe_none_mm']:.2f} mm: -{saved:.2f} mm, "
        f"-{100 * saved / best['mpjpe_none_mm']:.0f} %), jitter {best['jitter_m_s2']:.2f} m/s^2 "
        f"(unfiltered {best['jitter_none_m_s2']:.2f}), bone std {best['bone_std_mm']:.2f} mm, "
        f"2 Hz gain {best['probe_gain_2hz']:.3f}; runner-up {best['runner_up']} "
        f"{best['mpjpe_runner_up_mm']:.2f} mm; excluded: {best['excluded']}")


def study_tracks(paths: list[str]) -> dict:
  """Part (b): {file: {variant: metrics against the unfiltered (gap-filled) track}}."""
  results = {}
  for path in paths:
    try:
      data = np.load(path)
      fps, limbs = float(data["fps"]), data["limbs"]
      # One track ("positions") or several ("positions_<track>", as --mode=video writes them
      # in tracks_raw.npz).
      keys = [key for key in data.files if key.startswith("positions_")] or ["positions"]
      tracks = {key: data[key] for key in keys}
    except (OSError, KeyError, ValueError) as error:
      raise ValueError(f"track file {path}: {error}; expected an .npz with arrays positions "
                       "(or positions_<track>) [T, J, 3] mm, fps and limbs [B, 2]") from None
    for key, positions in tracks.items():
      raw, _ = filtering.fill_gaps(positions, GAP_FRAMES)
      max_lag = min(5, (len(raw) - 2) // 2)
      rows = {}
      for variant in VARIANTS:
        out = variant.apply(raw, fps)
        rows[variant.name] = {
            "jitter_m_s2": filtering.jitter(out, fps),
            "bone_std_mm": filtering.bone_length_variation(out, limbs)[0],
            "lag_frames": filtering.lag_frames(raw, out, max_lag),
            "change_mm": filtering.mpjpe(raw, out),
        }
      name = path if key == "positions" else f"{path}:{key[len('positions_'):]}"
      results[name] = {"frames": len(raw), "fps": fps, "rows": rows}
  return results


def _table(rows: dict[str, dict[str, float]], groups: list[str], metrics: tuple[str, ...],
           grouped: dict[str, dict[str, dict[str, float]]]) -> str:
  header = "| variant | " + " | ".join(f"{g}: {m}" for g in groups for m in metrics) + " |"
  lines = [header, "|" + "---|" * (1 + len(groups) * len(metrics))]
  for name in rows:
    cells = [f"{grouped[g][name][m]:.2f}" for g in groups for m in metrics]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv):
  del argv
  noise_levels = [float(x) for x in FLAGS.noise_mm]
  tracks = read_panoptic_tracks(FLAGS.panoptic_root)
  study = study_panoptic(tracks, noise_levels, FLAGS.seeds, FLAGS.drop_frames)
  groups = [f"{n:g}" for n in noise_levels]
  grouped = {g: dict(study["noise"][g]) for g in groups}
  for g in groups:
    grouped[g]["truth (Panoptic)"] = study["truth"]
  names = {name: None for name in [v.name for v in VARIANTS] + ["truth (Panoptic)"]}
  print(f"(a) CMU Panoptic 160906_band1/2: {len(tracks)} tracks x {tracks[0].shape[0]} frames at "
        f"{PANOPTIC_FPS} fps, {FLAGS.seeds} seeds, {FLAGS.drop_frames} dropped frames filled; "
        "column groups are the noise std (mm per coordinate)\n")
  print(_table(names, [f"{g} mm" for g in groups], _METRICS,
               {f"{g} mm": grouped[g] for g in groups}))
  print(f"\nNoise-free {PROBE_HZ:g} Hz probe (300 mm sine, {PROBE_FRAMES} frames):\n")
  print(_table(study["probe"], ["probe"], ("probe_lag_frames", "probe_gain_2hz"),
               {"probe": study["probe"]}))
  best = best_variant(study)
  _print_best("Best with |lag| <= 1 frame", best)
  default = best_variant(study, min_gain=MIN_PROBE_GAIN)
  _print_best(f"Best with |lag| <= 1 frame and 2 Hz gain >= {MIN_PROBE_GAIN} (the default's rule)",
              default)
  report = {"panoptic": study, "best": best, "default": default,
            "variants": [dataclasses.asdict(v) for v in VARIANTS]}
  if FLAGS.tracks:
    report["tracks"] = study_tracks(FLAGS.tracks)
    for path, entry in report["tracks"].items():
      print(f"\n(b) {path}: {entry['frames']} frames at {entry['fps']:g} fps, against the "
            "unfiltered track\n")
      print(_table(entry["rows"], ["track"], ("jitter_m_s2", "bone_std_mm", "lag_frames",
                                              "change_mm"), {"track": entry["rows"]}))
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump(report, f, indent=1)
    print(f"\nwrote {FLAGS.output}")


if __name__ == "__main__":
  app.run(main)
