r"""TF Serving under load: concurrent clients, fuse_crops and image signatures, batching off and on.

  python -m benchmarks.serving_load                                   # the table in BUILD.md
  python -m benchmarks.serving_load --seconds=3 --clients=1,4         # quicker

Exports a small rig (built-in h36m, --views cameras, MetaFuse^0 fusion at top-k --top_k, an
untrained --backbone at --image_size px: latency does not depend on the weights) and serves it
with the in-process server (`mf_tf.serving.server`) in a child process, so that the clients and
the server hold interpreter locks of their own: once without batching, once with the export's
batching_parameters file (`mf_tf.serving.batching`: configs/default.py's config.export.batching,
num_batch_threads this machine's cores).
Both servers answer on 2 x max_batch_size gRPC threads, so the only difference is the batching.

For each signature, fuse_crops (one person: crop heatmaps [1, V, 64, 64, J] and crop affines)
and serving_default (uint8 images [1, V, S, S, 3]), and each number of concurrent clients (one
thread and one channel each, sending one frame per request back to back for --seconds, over
--inputs distinct prepared requests, outputs filtered to the 2D joints, scores and 3D joints),
it prints throughput (requests/s), p50 and p99 latency (ms), the frames per batch the server ran,
and the largest difference between an answer and a direct unbatched call of the SavedModel on
the same input: 2D (px) and 3D (mm), and the server's resident memory (RSS, from /proc) after
the cell. Every cell runs once untimed first (--warmup_seconds), so that the timed pass meets no
batch shape for the first time: the RSS it adds is growth with the requests served, which must be
none (the warm-up raises it to a plateau: larger batches hold larger tensors, and the allocator
keeps what it freed).

Absolute figures depend on the machine and on what else runs there; compare rows of one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import prediction_service_pb2_grpc  # noqa: E402

from configs import default as default_config  # noqa: E402
from mf_tf.data.codec import HeatmapCodec  # noqa: E402
from mf_tf.fusion import calibrated  # noqa: E402
from mf_tf.geometry import crops  # noqa: E402
from mf_tf.geometry import rigs  # noqa: E402
from mf_tf.models.backbone import build_backbone  # noqa: E402
from mf_tf.modes import export as export_mode  # noqa: E402
from mf_tf.serving import client  # noqa: E402
from mf_tf.serving import export  # noqa: E402
from mf_tf.serving import server  # noqa: E402

SIGNATURES = {  # Signature -> (the outputs asked for: 2D, scores, 3D).
    export.SIGNATURE_CROPS: ("joints_2d", "scores", "joints_3d"),
    export.SIGNATURE_IMAGES: ("keypoints_image", "scores", "joints_3d"),
}


def rss_mib(pid: str = "self") -> float:
  """Resident set size of a process, MiB (Linux /proc)."""
  with open(f"/proc/{pid}/status", encoding="ascii") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024.0
  raise OSError(f"no VmRSS in /proc/{pid}/status")


def _serve(models_config: str, batching_on: bool, workers: int, connection) -> None:
  """Child process: serves until told to stop; answers "stats" with (batch sizes, RSS)."""
  running = server.start_server(models_config, batching=batching_on, max_workers=workers)
  connection.send(running.address)
  while True:
    command = connection.recv()
    if command == "stats":
      batcher = running.servicer.batcher
      connection.send((dict(batcher.batch_sizes) if batcher else {}, rss_mib()))
    elif command == "reset":
      if running.servicer.batcher:
        running.servicer.batcher.batch_sizes.clear()
      connection.send(True)
    else:
      running.stop()
      connection.send(True)
      return


class ServerProcess:
  """The in-process server in a child process (spawned: no TensorFlow state inherited)."""

  def __init__(self, models_config: str, batching_on: bool, workers: int):
    context = multiprocessing.get_context("spawn")
    self._connection, child = context.Pipe()
    self._process = context.Process(target=_serve, args=(models_config, batching_on, workers,
                                                         child), daemon=True)
    self._process.start()
    self.address = self._connection.recv()

  def ask(self, command: str):
    self._connection.send(command)
    return self._connection.recv()

  def stop(self) -> None:
    self.ask("stop")
    self._process.join(30)


@dataclasses.dataclass
class Cell:
  signature: str
  batching: bool
  clients: int
  requests: int
  seconds: float
  latencies_ms: np.ndarray
  frames_per_batch: float
  max_diff_2d: float
  max_diff_3d: float
  errors: int
  rss_mib: float


def _crop_inputs(rig, num_joints: int, count: int, seed: int = 0) -> list[dict]:
  """Person crops of random poses near the rig's centre: Gaussian peaks (std 2 crop px)."""
  rng = np.random.default_rng(seed)
  codec = HeatmapCodec(export.CROP_HEATMAP_SIZE, 2.0)
  inputs = []
  for _ in range(count):
    points = np.array([0.0, 0.0, 900.0]) + rng.uniform(-300.0, 300.0, (num_joints, 3))
    affines, peaks = [], []
    for camera in rig.cameras:
      undistorted = camera.project(points, distort=False)[0]
      affine = crops.roi_affine(undistorted.mean(0), 1.3 * np.ptp(undistorted, axis=0).max(),
                                rng.uniform(-0.3, 0.3), export.CROP_HEATMAP_SIZE)
      affines.append(affine)
      peaks.append(crops.apply_affine(affine, undistorted))
    inputs.append({"crop_heatmaps": codec.encode(np.stack(peaks)[None])[0].numpy(),
                   "crop_affines": np.stack(affines)[None].astype(np.float32)})
  return inputs


def _image_inputs(rig, image_size: int, count: int, seed: int = 1) -> list[dict]:
  rng = np.random.default_rng(seed)
  return [{"images": rng.integers(0, 256, (1, rig.num_views, image_size, image_size, 3),
                                  dtype=np.uint8)} for _ in range(count)]


def run_cell(address: str, rig_name: str, signature: str, inputs: list[dict],
             direct: list[dict], clients: int, seconds: float) -> tuple:
  """`clients` threads sending requests back to back for `seconds`.

  Returns:
    (requests answered, wall seconds, latencies ms, max 2D difference, max 3D difference, errors).
  """
  wanted = SIGNATURES[signature]
  requests = [client.predict_request(rig_name, signature, value, output_filter=wanted)
              for value in inputs]
  results = [[] for _ in range(clients)]
  errors = [0] * clients
  barrier = threading.Barrier(clients + 1)
  deadline = [0.0]

  def one_client(index):
    channel = client.open_channel(address)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    stub.Predict(requests[index % len(requests)], timeout=120)  # Connected before timing.
    barrier.wait()
    sent = index
    while time.perf_counter() < deadline[0]:
      which = sent % len(requests)
      start = time.perf_counter()
      try:
        response = stub.Predict(requests[which], timeout=120)
      except Exception:  # noqa: BLE001  (counted)
        errors[index] += 1
        continue
      results[index].append((which, time.perf_counter() - start, response))
      sent += clients
    channel.close()

  threads = [threading.Thread(target=one_client, args=(i,)) for i in range(clients)]
  for thread in threads:
    thread.start()
  deadline[0] = time.perf_counter() + 1e9
  barrier.wait()
  start = time.perf_counter()
  deadline[0] = start + seconds
  for thread in threads:
    thread.join()
  wall = time.perf_counter() - start
  latencies, diff_2d, diff_3d = [], 0.0, 0.0
  for which, latency, response in (item for items in results for item in items):
    latencies.append(1e3 * latency)
    answer = client.response_arrays(response)
    diff_2d = max(diff_2d, float(np.max(np.abs(answer[wanted[0]] - direct[which][wanted[0]]))))
    diff_3d = max(diff_3d, float(np.max(np.abs(answer[wanted[2]] - direct[which][wanted[2]]))))
  return len(latencies), wall, np.asarray(latencies), diff_2d, diff_3d, sum(errors)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--views", type=int, default=4)
  parser.add_argument("--backbone", default="mobilenetv2_035")
  parser.add_argument("--image_size", type=int, default=128)
  parser.add_argument("--joints", type=int, default=17)
  parser.add_argument("--top_k", type=int, default=64)
  parser.add_argument("--clients", default="1,4,16")
  parser.add_argument("--seconds", type=float, default=8.0, help="per cell")
  parser.add_argument("--inputs", type=int, default=8, help="distinct requests per signature")
  parser.add_argument("--signatures", default=",".join(SIGNATURES))
  defaults = export_mode.batching_settings(default_config.get_config())
  parser.add_argument("--batch_timeout_micros", type=int, default=defaults.batch_timeout_micros)
  parser.add_argument("--num_batch_threads", type=int, default=os.cpu_count() or 1,
                      help="default: this machine's cores (the server runs here)")
  parser.add_argument("--warmup_seconds", type=float, default=3.0,
                      help="per cell, before the timed pass")
  parser.add_argument("--allowed_batch_sizes", default="",
                      help="e.g. 1,2,4,8,16 (empty: no padding)")
  args = parser.parse_args()
  clients = [int(part) for part in args.clients.split(",")]
  signatures = [part for part in args.signatures.split(",") if part]

  rig = rigs.get_rig("h36m")
  rig = rig.subset(range(args.views), name=f"h36m{args.views}") if rig.num_views > args.views \
      else rig
  heatmap_size = args.image_size // 4
  settings = dataclasses.replace(
      defaults, batch_timeout_micros=args.batch_timeout_micros,
      num_batch_threads=args.num_batch_threads,
      allowed_batch_sizes=tuple(int(part) for part in args.allowed_batch_sizes.split(",")
                                if part.strip()))
  print(f"rig {rig.name} ({rig.num_views} views), backbone {args.backbone} at {args.image_size} "
        f"px -> {heatmap_size} px heatmaps, {args.joints} joints, top-k {args.top_k}; "
        f"os.cpu_count {os.cpu_count()}")
  print(f"batching_parameters: {settings}")
  with tempfile.TemporaryDirectory() as export_dir:
    start = time.perf_counter()
    backbone = build_backbone(args.backbone, args.image_size, args.joints)
    fusion = calibrated.calibrated_fusion(rig, heatmap_size, 0.2, 1.0, 0.1, name="fusion")
    path = export.export_rig(backbone, fusion.materialize(top_k=args.top_k), rig, export_dir,
                             batching=settings)
    print(f"exported in {time.perf_counter() - start:.1f} s")
    loaded = tf.saved_model.load(path)
    inputs = {export.SIGNATURE_CROPS: _crop_inputs(rig, args.joints, args.inputs),
              export.SIGNATURE_IMAGES: _image_inputs(rig, args.image_size, args.inputs)}
    direct = {name: [{key: value.numpy() for key, value in loaded.signatures[name](
        **{k: tf.constant(v) for k, v in item.items()}).items()} for item in items]
              for name, items in inputs.items()}
    models_config = os.path.join(export_dir, "models.config")
    workers = 2 * settings.max_batch_size
    cells, memory = [], {}
    for batching_on in (False, True):
      served = ServerProcess(models_config, batching_on, workers)
      try:
        # Warm-up: every cell once, untimed, so that the timed pass meets no new batch shape
        # and the memory it adds is growth, not the first use of a shape.
        for name in signatures:
          for count in clients:
            run_cell(served.address, rig.name, name, inputs[name], direct[name], count,
                     args.warmup_seconds)
        rss_before = served.ask("stats")[1]
        for name in signatures:
          for count in clients:
            served.ask("reset")
            done, wall, latencies, diff_2d, diff_3d, errors = run_cell(
                served.address, rig.name, name, inputs[name], direct[name], count, args.seconds)
            sizes, rss = served.ask("stats")
            batches = sum(sizes.values())
            per_batch = (sum(size * n for size, n in sizes.items()) / batches if batches
                         else 1.0)
            cell = Cell(name, batching_on, count, done, wall, latencies, per_batch, diff_2d,
                        diff_3d, errors, rss)
            cells.append(cell)
            print(f"  {name:15s} batching {'on ' if batching_on else 'off'} {count:2d} clients: "
                  f"{done / wall:6.1f} req/s, p50 {np.percentile(latencies, 50):7.1f} ms, "
                  f"p99 {np.percentile(latencies, 99):7.1f} ms, {per_batch:4.1f} frames/batch",
                  flush=True)
        memory[batching_on] = (rss_before, served.ask("stats")[1])
      finally:
        served.stop()

  print(f"\n{'signature':15s} | batching | clients | requests/s | p50 ms | p99 ms | frames/batch"
        f" | max |d| 2D px | max |d| 3D mm | errors | server RSS MiB")
  print("-" * 135)
  for cell in cells:
    print(f"{cell.signature:15s} | {'on' if cell.batching else 'off':8s} | {cell.clients:7d} | "
          f"{cell.requests / cell.seconds:10.1f} | {np.percentile(cell.latencies_ms, 50):6.1f} | "
          f"{np.percentile(cell.latencies_ms, 99):6.1f} | {cell.frames_per_batch:12.1f} | "
          f"{cell.max_diff_2d:13.2e} | {cell.max_diff_3d:13.2e} | {cell.errors:6d} | "
          f"{cell.rss_mib:14.0f}")
  print()
  for batching_on, (before, after) in memory.items():
    total = sum(c.requests for c in cells if c.batching == batching_on)
    print(f"server RSS, batching {'on ' if batching_on else 'off'}: {before:.0f} MiB after "
          f"the warm-up pass, {after:.0f} MiB after the {total} timed requests "
          f"({after - before:+.0f} MiB)")


if __name__ == "__main__":
  main()
