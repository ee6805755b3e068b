"""The per-frame pipeline's plumbing: prefetching, stage timing, atomic line files, duplicates."""

import os
import threading
import time

import numpy as np
import pytest

from mf_tf import files
from mf_tf.data import joints as joints_lib
from mf_tf.reconstruct import pipeline
from mf_tf.reconstruct import reconstructor
from mf_tf.reconstruct import tracking

_H36M = joints_lib.get_joint_set("h36m17")


def test_prefetch_keeps_order_and_raises_where_the_reader_failed():
  def frames():
    for index in range(5):
      if index == 3:
        raise ValueError("video 'cam02.mp4' ended at frame 3, expected 5")
      yield index

  seen = []
  with pytest.raises(ValueError, match="ended at frame 3"):
    for item in pipeline.prefetch(frames()):
      seen.append(item)
  assert seen == [0, 1, 2]
  assert list(pipeline.prefetch(iter(range(7)), depth=2)) == list(range(7))


def test_prefetch_reads_ahead_while_the_consumer_works_and_stops_when_closed():
  read = []

  def frames():
    for index in range(100):
      read.append(index)
      yield index

  iterator = pipeline.prefetch(frames(), depth=2)
  assert next(iterator) == 0
  time.sleep(0.2)
  assert 2 <= len(read) <= 4  # The reader is ahead by the depth, no further.
  iterator.close()
  time.sleep(0.3)
  assert len(read) <= 5 and not [thread for thread in threading.enumerate()
                                  if thread.name == "mf_tf_decode" and thread.is_alive()]


def test_stage_timer_excludes_nested_stages_and_adds_threads():
  timer = reconstructor.StageTimer()
  with timer.stage("outer"):
    time.sleep(0.05)
    with timer.stage("inner"):
      time.sleep(0.1)
  assert timer.seconds["inner"] == pytest.approx(0.1, abs=0.03)
  assert timer.seconds["outer"] == pytest.approx(0.05, abs=0.03)

  def work():
    with timer.stage("worker"):
      time.sleep(0.1)

  threads = [threading.Thread(target=work) for _ in range(2)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert timer.seconds["worker"] == pytest.approx(0.2, abs=0.05)  # Thread time, summed.


def test_atomic_line_file_appears_whole_or_not_at_all(tmp_path):
  path = tmp_path / "frames.jsonl"
  with files.AtomicTextFile(str(path)) as stream:
    stream.write("first\n")
    assert not path.exists()  # Nothing at the path while it is being written.
  assert path.read_text() == "first\n"
  with pytest.raises(RuntimeError):
    with files.AtomicTextFile(str(path)) as stream:
      stream.write("second, half written\n")
      raise RuntimeError("interrupted")
  assert path.read_text() == "first\n"  # The previous file stays.
  assert os.listdir(tmp_path) == ["frames.jsonl"]  # No temporary left behind.


def test_same_person_by_median_joint_distance_in_either_orientation():
  rng = np.random.default_rng(0)
  body = rng.uniform(-400, 400, (_H36M.num_joints, 3)) + [0.0, 0.0, 1000.0]
  near = body + rng.normal(0, 30, body.shape)
  assert tracking.same_person(body, near, _H36M) is False  # One person, as labelled.
  assert tracking.same_person(body, near[_H36M.mirror_array], _H36M) is True  # Sides swapped.
  assert tracking.same_person(body, body + [900.0, 0.0, 0.0], _H36M) is None  # Another person.
  few = np.full_like(body, np.nan)
  few[:3] = body[:3]
  assert tracking.same_person(body, few, _H36M) is None  # Too few joints to tell.
