"""SIGINT / SIGTERM during training: the first finishes the step and stops cleanly, a second at once.

The one implementation the training loops share (`mf_tf.train.metatrain`, `mf_tf.train.finetune`
with --mode=finetune). While `deferred_stop_signals` is active a first signal only records a
request; the loop looks at it after every step, leaves nothing half-written, and raises
`request.exception()`: KeyboardInterrupt for SIGINT (`mf_tf.main` exits 130), SystemExit(128 +
SIGTERM) = 143 for SIGTERM, the status a shell gives a process the signal ended.
"""

from __future__ import annotations

import contextlib
import signal
import threading

from absl import logging

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
  """The first stop signal received while `deferred_stop_signals` is active.

  Attributes:
    signum: The signal number, or None while none arrived.
  """

  def __init__(self):
    self.signum = None

  @property
  def requested(self) -> bool:
    return self.signum is not None

  @property
  def name(self) -> str:
    """The signal's name ("SIGTERM"), or "" while none arrived."""
    return "" if self.signum is None else signal.Signals(self.signum).name

  def exception(self) -> BaseException:
    """What the loop raises to stop: KeyboardInterrupt (SIGINT) or SystemExit(128 + signum)."""
    return stop_exception(self.signum)


def stop_exception(signum: int) -> BaseException:
  """KeyboardInterrupt for SIGINT, else SystemExit(128 + signum) (143 for SIGTERM)."""
  if signum == signal.SIGINT:
    return KeyboardInterrupt()
  return SystemExit(128 + int(signum))


@contextlib.contextmanager
def deferred_stop_signals(loop: str, then: str):
  """While active, SIGINT / SIGTERM only record a stop request (the loop stops after its step).

  A second signal stops at once (KeyboardInterrupt / SystemExit). Outside the main thread,
  signals cannot be handled and nothing changes. The previous handlers are restored on exit.

  Args:
    loop: The loop's name for the log line ("metatrain").
    then: What the loop does before stopping, for the log line ("saving a checkpoint").

  Yields:
    A `StopRequest`.
  """
  request = StopRequest()
  if threading.current_thread() is not threading.main_thread():
    yield request
    return

  def handler(signum, frame):
    del frame
    if request.requested:
      raise stop_exception(signum)
    request.signum = signum
    logging.warning("%s: %s received: finishing the current step, %s, then stopping (send it "
                    "again to stop at once)", loop, signal.Signals(signum).name, then)

  previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
  try:
    yield request
  finally:
    for signum, old in previous.items():
      signal.signal(signum, old)
