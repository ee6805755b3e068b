r"""--mode=convert: one-time conversion of a TRUSTED annotation pickle into the safe format.

  python -m mf_tf.main --mode=convert --config.convert.input=h36m_train.pkl \
      --config.convert.trust_pickle=True [--config.convert.output=DIR] --workdir=/tmp/mf_tf

WARNING: unpickling executes any code in the file (see `mf_tf.data.convert`); without
--config.convert.trust_pickle=True the mode refuses. An existing output folder is replaced only
if mf_tf wrote it.
"""

from __future__ import annotations

from mf_tf import files
from mf_tf.data import convert


def run(config, workdir: str) -> str:
  """`--mode=convert`: config.convert.{format, input, output, trust_pickle} (output default
  <workdir>/converted/h36m)."""
  output = config.convert.output or files.inside(workdir, "converted", "h36m")
  if not config.convert.input:
    raise ValueError("--mode=convert needs --config.convert.input=FILE (a trusted annotation "
                     "pickle)")
  return convert.convert(config.convert.format, config.convert.input, output,
                         trust_pickle=config.convert.trust_pickle)
