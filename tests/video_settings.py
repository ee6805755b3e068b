"""The reconstruction settings of the tests, built from configs/default.py as --mode=video
builds them.

`SessionSettings`, `people.InstantSettings`, `reconstructor.TrackingSettings` and
`pipeline.OutputSettings` have no defaults of their own: `mf_tf.modes.video.session_settings`
turns config.video (and config.fusion's line) into them, and a test names what it changes, e.g.
`instant_settings(min_score=0.8)` (`dataclasses.replace`, checked by the settings' validation).
Imported as `from video_settings import ...` (tests/ is on sys.path: it holds the root
conftest.py).
"""

import dataclasses

from configs import default
from mf_tf.modes import video
from mf_tf.reconstruct import people
from mf_tf.reconstruct import pipeline
from mf_tf.reconstruct import reconstructor
from mf_tf.reconstruct import session


def session_settings(**changes) -> session.SessionSettings:
  """The `SessionSettings` of configs/default.py, with `changes`."""
  return dataclasses.replace(video.session_settings(default.get_config()), **changes)


def instant_settings(**changes) -> people.InstantSettings:
  """The `people.InstantSettings` of configs/default.py, with `changes`."""
  return dataclasses.replace(session_settings().instant, **changes)


def tracking_settings(**changes) -> reconstructor.TrackingSettings:
  """The `reconstructor.TrackingSettings` of configs/default.py, with `changes`."""
  return dataclasses.replace(session_settings().tracking, **changes)


def output_settings(**changes) -> pipeline.OutputSettings:
  """The `pipeline.OutputSettings` of configs/default.py, with `changes`."""
  return dataclasses.replace(session_settings().output, **changes)
