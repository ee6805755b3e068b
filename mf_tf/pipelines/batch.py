r"""Many recorded sessions on Apache Beam: each reconstructed as `--mode=video` does, in parallel.

One element per session (`sessions.find_sessions`):

    Create(sessions) -> Reshuffle -> ParDo(ReconstructSessionFn) -> ToList -> write the report

`ReconstructSessionFn` loads BlazePose once per worker (`setup`) and runs `sessions.process_session`
on each session it is given: outputs under <output_root>/<session>/, a completion marker written
last, finished sessions skipped on a rerun, failures reported in <output_root>/batch_report.json
and a log line while the other sessions go on (`mf_tf.pipelines.sessions`).

Runners, chosen and configured by Beam's standard `PipelineOptions` (`run_batch`'s pipeline_args
are passed through unchanged and win over the defaults):
  DirectRunner   this machine: the sessions shared out among `workers` processes
                 (direct_running_mode=multi_processing, direct_num_workers; each worker gets its
                 share up front, so sessions of very different lengths balance less well), each
                 session running BlazePose on `threads` threads. Run by FnApiRunner, the engine
                 Beam's DirectRunner runs batch pipelines on, named directly: the DirectRunner
                 first tries its Prism runner, a binary it downloads, which does not run the
                 workers in separate processes.
  Others         --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
                 --sdk_container_image=IMAGE (an image with mf_tf, its dependencies and
                 BlazePose's models, $MF_TF_BLAZEPOSE_DIR); --runner=FlinkRunner
                 --flink_master=HOST:8081 --environment_type=DOCKER|PROCESS; --runner=SparkRunner
                 --spark_master_url=spark://HOST:7077; the worker count is theirs
                 (--max_num_workers, --parallelism, ...). mf_tf reads and writes plain files: the
                 sessions root and the output root must have the same paths on the launching
                 machine and on every worker (a shared file system).
One batch runs per output root at a time.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import apache_beam as beam
from absl import logging
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from mf_tf.pipelines import sessions as sessions_lib
from mf_tf.reconstruct import session as session_lib

# Runners that run the pipeline on this machine, in direct_num_workers processes.
LOCAL_RUNNERS = ("DirectRunner", "SwitchingDirectRunner", "FnApiRunner")

# BlazePose loads in this process (`ReconstructSessionFn.setup`), reported with each session.
_MODEL_LOADS = 0


class ReconstructSessionFn(beam.DoFn):
  """(name, session folder) -> `sessions.process_session`'s result, with the worker's process id
  and how many times it loaded BlazePose (once, in `setup`).

  Args:
    output_root: Folder of the sessions' output folders.
    settings: `mf_tf.reconstruct.session.SessionSettings`.
    threads: BlazePose threads of each session (`session.load_models`).
  """

  def __init__(self, output_root: str, settings: session_lib.SessionSettings, threads: int):
    super().__init__()
    self.output_root = output_root
    self.settings = settings
    self.threads = threads
    self._models = None

  def setup(self):
    global _MODEL_LOADS  # pylint: disable=global-statement
    self._models = session_lib.load_models(self.threads, cores=self.threads)
    _MODEL_LOADS += 1

  def process(self, element):
    name, source = element
    result = sessions_lib.process_session(name, source, self.output_root, self.settings,
                                          self._models)
    beam.metrics.Metrics.counter("mf_tf_batch", f"sessions_{result['status']}").inc()
    yield {**result, "worker": os.getpid(), "worker_model_loads": _MODEL_LOADS}


def pipeline_options(runner: str, workers: int, pipeline_args: Sequence[str] = ()):
  """Beam options: `runner`, then on a local runner `workers` processes, then `pipeline_args`
  (which win over both).

  Returns:
    (PipelineOptions, the runner's name).
  """
  args = [f"--runner={runner}", *pipeline_args]
  runner = PipelineOptions(args).view_as(StandardOptions).runner or runner
  if runner in LOCAL_RUNNERS:
    args = [args[0], "--direct_running_mode=multi_processing", f"--direct_num_workers={workers}",
            *pipeline_args]
  return PipelineOptions(args), runner


def run_batch(sessions_root: str, output_root: str, settings: session_lib.SessionSettings, *,
              runner: str = "DirectRunner", workers: int = 0, threads: int = 0,
              pipeline_args: Sequence[str] = ()) -> dict:
  """Reconstructs every session of `sessions_root` into <output_root>/<session> on Beam.

  Args:
    sessions_root: Folder of session folders (`sessions.find_sessions`).
    output_root: Folder of the outputs (created); not the sessions root.
    settings: The SessionSettings of every session.
    runner: Beam runner name (a --runner in pipeline_args wins).
    workers: Local runners: sessions processed at once, one process each; 0: one per CPU core.
    threads: BlazePose threads per session; 0: the cores shared among the local workers (at
      least 1; 1 on other runners).
    pipeline_args: Further Beam pipeline options ("--name=value" items).

  Returns:
    The report (batch_report.json, `sessions.write_report`), or {} when the output root cannot
    be read from here.

  Raises:
    ValueError: no session, an output root that is the sessions root, a bad count or option.
  """
  sessions = sessions_lib.find_sessions(sessions_root)
  if os.path.realpath(output_root) == os.path.realpath(sessions_root):
    raise ValueError(f"output root {output_root!r} is the sessions root; expected another folder "
                     "(each session's outputs go to <output root>/<session>)")
  if workers < 0 or threads < 0:
    raise ValueError(f"workers={workers}, threads={threads}: expected >= 0 (0: from the cores)")
  pipeline_args = [str(arg) for arg in pipeline_args]
  unknown = [arg for arg in pipeline_args if not arg.startswith("--")]
  if unknown:
    raise ValueError(f"pipeline arguments {unknown}: expected Beam options as --name=value")
  cores = os.cpu_count() or 1
  options, runner_name = pipeline_options(runner, workers or cores, pipeline_args)
  local = runner_name in LOCAL_RUNNERS
  workers = (options.view_as(DirectOptions).direct_num_workers or cores) if local else workers
  threads = threads or (max(1, cores // workers) if local else 1)
  os.makedirs(output_root, exist_ok=True)
  report_path = os.path.join(output_root, sessions_lib.REPORT)
  if os.path.isfile(report_path):  # Read back below: never an earlier run's.
    os.remove(report_path)
  info = {"sessions_root": os.path.abspath(sessions_root),
          "output": os.path.abspath(output_root), "runner": runner_name,
          "workers": workers if local else None, "threads": threads}
  logging.info("batch: %d sessions of %s -> %s on %s (%s)", len(sessions), sessions_root,
               output_root, runner_name,
               f"{workers} processes x {threads} threads" if local else f"{threads} threads each")
  # DirectRunner: its batch engine, named directly (module docstring); others: from the options.
  beam_runner = FnApiRunner() if runner_name in ("DirectRunner", "SwitchingDirectRunner") else None
  with beam.Pipeline(runner=beam_runner, options=options) as pipeline:
    results = (pipeline
               | "Sessions" >> beam.Create(sessions)
               | "Spread" >> beam.Reshuffle()
               | "Reconstruct" >> beam.ParDo(ReconstructSessionFn(output_root, settings, threads)))
    _ = (results
         | "Collect" >> beam.combiners.ToList()
         | "Report" >> beam.Map(sessions_lib.write_report, output_root, info))
  try:
    with open(report_path, encoding="utf-8") as stream:
      report = json.load(stream)
  except OSError:
    return {}
  for error in report["errors"]:
    logging.error("batch: session %s failed: %s", error["session"], error["error"])
  return report
