r"""The recording pipeline's speed, stage by stage, against the per-frame pipeline it replaced.

  python -m benchmarks.recording_speed [--session=../shared/data/pose2sim/Demo_MultiPerson] \
      [--frames=100] [--baseline_frames=30]

Runs `mf_tf.reconstruct.pipeline.reconstruct_recording` on a Pose2Sim session (4 portrait views,
1088 x 1920, 60 fps) with the mode's default outputs (motion files, overlay videos at half size,
3D animation) and worker threads (`--workers`, config.video.workers), and prints frames per
second and the time of every stage per frame: the wall time of decode (waiting for the
prefetching decoder), views (detection + landmarks of every view, in the workers), association,
people (fusion + triangulation of every person, in the workers), recovery, tracking, overlays,
filtering and writing, and the worker time of detection, landmarks, fusion and triangulation. Then, in the same run and on the same frames, the per-frame pipeline that
`--mode=video` ran before tracks existed: the person detector (letterbox and tiles) and the
landmark model in every view at every frame, then association, fusion and triangulation
(`BlazePose.estimate` + `people.reconstruct_people`), no outputs; the ratio of the two is printed.
These machines are noisy: compare the ratio, measured in one run, more than absolute figures.
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from configs import default  # noqa: E402
from mf_tf.geometry import calibration_formats  # noqa: E402
from mf_tf.models import blazepose  # noqa: E402
from mf_tf.modes import video  # noqa: E402
from mf_tf.reconstruct import people  # noqa: E402
from mf_tf.reconstruct import pipeline  # noqa: E402
from mf_tf.reconstruct import reconstructor as reconstructor_lib  # noqa: E402
from mf_tf.reconstruct import recording as recording_lib  # noqa: E402

_DEFAULT_SESSION = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "..", "shared", "data", "pose2sim", "Demo_MultiPerson")

FLAGS = flags.FLAGS
flags.DEFINE_string("session", os.path.normpath(_DEFAULT_SESSION), "Pose2Sim session folder.")
flags.DEFINE_integer("frames", 100, "Frames of the pipeline run (from the first).")
flags.DEFINE_integer("baseline_frames", 30, "Frames of the per-frame baseline (0: skip it).")
flags.DEFINE_string("output_dir", "", "Where the outputs go (default: a temporary folder).")
flags.DEFINE_integer("workers", 0, "Worker threads (config.video.workers; 0: one per core).")


def main(argv):
  del argv
  settings = video.session_settings(default.get_config())  # --mode=video's defaults.
  with recording_lib.open_recording(FLAGS.session) as recording:
    rig = calibration_formats.read_calibration(recording.calibration_path,
                                               names=recording.camera_names)
    rig = calibration_formats.fit_to_image_size(rig, recording.frame_sizes)
    count = min(FLAGS.frames, recording.num_frames)
    model = blazepose.BlazePose()  # The baseline's: one model on every core.
    output_dir = FLAGS.output_dir or tempfile.mkdtemp(prefix="recording_speed_")
    reconstructor = reconstructor_lib.Reconstructor(video.models(FLAGS.workers), rig, "h36m17",
                                                    settings.instant, settings.tracking)
    summary = pipeline.reconstruct_recording(
        recording.frames(stop=count), rig, reconstructor, output_dir, fps=recording.fps,
        num_frames=count, output=settings.output)
    total = summary["seconds"]
    print(f"{FLAGS.session}: {count} frames x {len(rig.cameras)} views "
          f"{[f'{w}x{h}' for w, h in recording.frame_sizes.values()]}, "
          f"{len(summary['tracks'])} tracks, outputs in {output_dir}")
    print(f"pipeline: {summary['frames_per_second']:.2f} frames/s over the frame loop; "
          f"{count / total:.2f} frames/s including filtering and writing the files\n")
    wall = total
    print("| stage | ms per frame | share of the wall time |\n|---|---:|---:|")
    for stage, seconds in summary["stage_seconds"].items():
      share = (f"{seconds / wall * 100:.0f} %" if stage in pipeline.WALL_STAGES
               else "(in a worker)")
      print(f"| {stage} | {seconds / count * 1000:.1f} | {share} |")
    crops = sum(summary["detections_per_view"].values()) + sum(
        summary["recovered_per_view"].values())
    persons = max(1, sum(len(frame["tracks"]) for frame in summary["per_frame"]))
    print(f"\nlandmark crops: {crops / count:.1f} per frame, "
          f"{summary['stage_seconds']['landmarks'] / max(crops, 1) * 1000:.1f} ms each in a "
          f"worker; fusion {summary['stage_seconds']['fusion'] / persons * 1000:.1f} ms per person "
          "in a worker")
    if FLAGS.baseline_frames:
      frames = min(FLAGS.baseline_frames, count)
      start = time.perf_counter()
      decoded = 0.0
      iterator = recording.frames(stop=frames)
      for _ in range(frames):
        tick = time.perf_counter()
        _, _, images = next(iterator)
        decoded += time.perf_counter() - tick
        estimates = [model.estimate(image, "h36m17", camera=camera)
                     for image, camera in zip(images, rig.cameras)]
        people.reconstruct_people(estimates, rig, "h36m17", settings.instant)
      baseline = frames / (time.perf_counter() - start)
      ours = summary["frames_per_second"]
      print(f"\nper-frame baseline (detector + landmarks everywhere, no outputs): {baseline:.2f} "
            f"frames/s on the first {frames} frames (decode {decoded / frames * 1000:.0f} ms a "
            f"frame); pipeline / baseline: {ours / baseline:.2f}x")


if __name__ == "__main__":
  app.run(main)
