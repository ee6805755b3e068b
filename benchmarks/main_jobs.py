r"""Wall time of the README's main job, the benchmark default config and the test suite.

  python -m benchmarks.main_jobs                         # all three (about 20 min on 2 cores)
  python -m benchmarks.main_jobs --jobs=demo,suite       # some of them

Each job runs as a user runs it, one after the other, in a subprocess of this Python from the
repository root, writing into a fresh temporary folder:

  demo       python -m mf_tf.main --mode=demo --workdir=TMP                    goal <= 3 min
  benchmark  python -m mf_tf.main --mode=benchmark --config=configs/benchmark.py
                 --workdir=TMP --config.benchmark.progress=False                goal <= 15 min
  suite      python -m pytest -q -n auto tests                                  goal <= 6 min

The goals are for 2 quiet CPU cores (the figures of the developers' machine). These are
absolute times, so unlike the ratio benchmarks they are only as steady as the machine: run it
on a quiet one. A job that fails is reported with its exit status and the end of its output,
and the script then exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import timing

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (command after the Python executable, with {workdir}; goal in seconds)
JOBS = {
    "demo": (["-m", "mf_tf.main", "--mode=demo", "--workdir={workdir}"], 180.0),
    "benchmark": (["-m", "mf_tf.main", "--mode=benchmark", "--config=configs/benchmark.py",
                   "--workdir={workdir}", "--config.benchmark.progress=False"], 900.0),
    "suite": (["-m", "pytest", "-q", "-n", "auto", "tests"], 360.0),
}


def run_job(name: str, workdir: str) -> tuple[float, int, str]:
  """Runs one job to completion: (wall seconds, exit status, last 3000 characters of output)."""
  arguments, _ = JOBS[name]
  command = [sys.executable] + [a.format(workdir=workdir) for a in arguments]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  start = time.perf_counter()
  result = subprocess.run(command, cwd=_ROOT, env=env, capture_output=True, text=True,
                          check=False)
  seconds = time.perf_counter() - start
  return seconds, result.returncode, (result.stdout + result.stderr)[-3000:]


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--jobs", default=",".join(JOBS),
                      help=f"comma-separated jobs, of {', '.join(JOBS)}")
  args = parser.parse_args(argv)
  names = [name.strip() for name in args.jobs.split(",") if name.strip()]
  unknown = [name for name in names if name not in JOBS]
  if unknown or not names:
    parser.error(f"--jobs={args.jobs!r}: expected a comma-separated list of {', '.join(JOBS)}")
  print(f"{os.cpu_count()} CPUs; jobs run one after the other from {_ROOT}", flush=True)
  failed = False
  for name in names:
    with tempfile.TemporaryDirectory(prefix=f"mf_tf_{name}_") as workdir:
      seconds, status, tail = run_job(name, workdir)
    if status != 0:
      print(f"{name}: FAILED with exit status {status} after {seconds:.0f} s; its output "
            f"ends:\n{tail}", flush=True)
      failed = True
      continue
    print(f"{name}: {seconds:.0f} s ({seconds / 60:.1f} min)", flush=True)
    timing.report_goal(f"{name} wall time", seconds / 60, JOBS[name][1] / 60, "min")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
