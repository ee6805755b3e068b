r"""--mode=batch: every recorded session of a folder reconstructed as --mode=video does, on Beam.

  pip install -e ".[beam]"
  python -m mf_tf.main --mode=batch --workdir=runs/w \
      --config.batch.sessions_root=../shared/data/sessions [--config.batch.workers=2] \
      [--config.video.overlays=False ...]

Each sub-folder of config.batch.sessions_root holding videos/ is a session (Pose2Sim's layout,
its calibration/ file used unless config.video.rig names one); its outputs, the files
--mode=video writes with the same config.video settings, go to <output>/<session>/
(config.batch.output, default <workdir>/batch), and <output>/batch_report.json lists every
session: done, skipped (finished by an earlier run with the same settings) or failed, with its
error. A failed session does not stop the others; the command then ends with one error line
naming them. The pipeline and its runners: `mf_tf.pipelines.batch`; one session's work and the
report: `mf_tf.pipelines.sessions`. Locally (the default DirectRunner) config.batch.workers
processes take a session at a time each; another runner and any Beam option are given by
config.batch.runner and config.batch.pipeline_options, or after `--`:

  python -m mf_tf.main --mode=batch --workdir=runs/w \
      --config.batch.sessions_root=/mnt/shared/sessions --config.batch.output=/mnt/shared/out \
      -- --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp \
      --sdk_container_image=IMAGE
"""

from __future__ import annotations

import importlib.util
import os
import shlex

from mf_tf.modes import video
from mf_tf.pipelines import sessions as sessions_lib


def run(config, workdir: str, pipeline_args: tuple[str, ...] = ()) -> None:
  """--mode=batch: reads config.batch and config.video (see configs/default.py)."""
  settings = video.session_settings(config)
  batch = config.batch
  sessions_root = os.path.expanduser(str(batch.sessions_root).strip())
  if not sessions_root:
    raise ValueError("config.batch.sessions_root is empty; expected a folder of session folders "
                     "(<session>/videos/<camera>.mp4, <session>/calibration/)")
  sessions_lib.find_sessions(sessions_root)  # A bad root fails here, Beam or not.
  if importlib.util.find_spec("apache_beam") is None:
    raise ValueError('--mode=batch needs Apache Beam, which is not installed; install the "beam" '
                     'extra: pip install -e ".[beam]"')
  from mf_tf.pipelines import batch as batch_lib  # pylint: disable=import-outside-toplevel

  output = os.path.expanduser(str(batch.output).strip()) or os.path.join(workdir, "batch")
  try:
    options = shlex.split(str(batch.pipeline_options))
  except ValueError as error:
    raise ValueError(f"config.batch.pipeline_options={batch.pipeline_options!r}: {error}") from None
  report = batch_lib.run_batch(
      sessions_root, output, settings, runner=str(batch.runner), workers=int(batch.workers),
      threads=int(batch.threads), pipeline_args=[*options, *pipeline_args])
  if not report:
    print(f"batch: pipeline finished; its report is {os.path.join(output, sessions_lib.REPORT)} "
          "on the workers' file system")
    return
  counts = report["counts"]
  print(f"batch: {len(report['sessions'])} sessions: {counts['done']} done, {counts['skipped']} "
        f"skipped (finished before), {counts['failed']} failed; outputs and "
        f"{sessions_lib.REPORT} in {output}")
  if report["errors"]:
    named = "; ".join(f"{error['session']}: {error['error']}" for error in report["errors"][:3])
    more = f" (and {len(report['errors']) - 3} more)" if len(report["errors"]) > 3 else ""
    raise ValueError(f"{len(report['errors'])} of {len(report['sessions'])} sessions failed: "
                     f"{named}{more}; see {os.path.join(output, sessions_lib.REPORT)}")
