"""A bounded load test of the in-process PredictionService: concurrent clients on 127.0.0.1.

Run with `pytest -s` to see the measured throughput and latency percentiles.
"""

import concurrent.futures
import os
import time

import numpy as np
import pytest
from serving_test_helpers import IMAGE_SIZE, NUM_JOINTS, NUM_VIEWS

from mf_tf.serving import client, server

NUM_REQUESTS = 40
NUM_CLIENTS = 4
NUM_INPUTS = 4  # Distinct frames, sent in turn: a response answering another request shows.
REQUEST_TIMEOUT_S = 30.0
LOAD_BUDGET_S = 40.0


@pytest.fixture(scope="module")
def running(exported):
  with server.start_server(os.path.join(exported["dir"], "models.config"),
                           max_workers=NUM_CLIENTS) as running_server:
    yield running_server


def _frames():
  rng = np.random.default_rng(11)
  return [rng.integers(0, 256, (NUM_VIEWS, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
          for _ in range(NUM_INPUTS)]


def test_concurrent_requests_all_succeed_with_the_sequential_answers(running):
  frames = _frames()
  # Sequential answers first (this also warms up the served functions).
  expected = [client.predict(running.address, "toy3", frame, timeout=REQUEST_TIMEOUT_S)
              for frame in frames]

  def one_request(index):
    start = time.perf_counter()
    result = client.predict(running.address, "toy3", frames[index % NUM_INPUTS],
                            timeout=REQUEST_TIMEOUT_S)
    return index, time.perf_counter() - start, result

  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(NUM_CLIENTS) as pool:
    futures = [pool.submit(one_request, index) for index in range(NUM_REQUESTS)]
    done, not_done = concurrent.futures.wait(futures, timeout=LOAD_BUDGET_S)
    for future in not_done:
      future.cancel()
  elapsed = time.perf_counter() - start
  assert not not_done, (f"{len(not_done)} of {NUM_REQUESTS} requests unfinished after "
                        f"{LOAD_BUDGET_S} s")
  errors = [future.exception() for future in done if future.exception() is not None]
  assert not errors, f"{len(errors)} of {NUM_REQUESTS} requests failed, first: {errors[0]!r}"

  latencies = []
  for future in done:
    index, latency, result = future.result()
    latencies.append(latency)
    want = expected[index % NUM_INPUTS]
    assert set(result) == set(want), index
    assert result["keypoints_image"].shape == (NUM_VIEWS, NUM_JOINTS, 2)
    for key, value in want.items():
      np.testing.assert_allclose(result[key], value, rtol=1e-5, atol=1e-5,
                                 err_msg=f"request {index}: {key}")
  latencies = np.asarray(latencies)
  rps = NUM_REQUESTS / elapsed
  p50, p95 = np.percentile(latencies, [50, 95]) * 1e3
  print(f"\nserving load: {NUM_REQUESTS} requests from {NUM_CLIENTS} client threads in "
        f"{elapsed:.2f} s: {rps:.1f} requests/s, latency p50 {p50:.1f} ms, p95 {p95:.1f} ms")
  assert len(latencies) == NUM_REQUESTS
  assert 0 < p50 <= p95
