"""tf.Module helpers shared by the serving export (`export.py`) and the TFLite backbone.

Keras 3 variables wrap tf.Variables. A tf.Module that tracks a Keras model saves every weight twice
(the Keras variable and the tf.Variable it wraps), and the TFLite converter cannot freeze the
wrapped ones (it leaves READ_VARIABLE ops reading uninitialized resources: NaN outputs). The
serving modules therefore hold Keras objects in an `Untracked` holder and track the tf.Variables
their traced functions capture (`graph_variables`), as `keras.export.ExportArchive` does.
"""

from __future__ import annotations


class Untracked:
  """Holds Keras objects on a tf.Module without making them part of its SavedModel.

  Attributes are the keyword arguments, unchanged: `Untracked(backbone=m).backbone is m`.
  tf.Module does not look inside plain Python objects, so nothing held here is saved; the owning
  module tracks `graph_variables(...)` instead.

  Args:
    **objects: Name -> object (usually Keras models or layers).
  """

  def __init__(self, **objects):
    self.__dict__.update(objects)


def graph_variables(functions) -> list:
  """The tf.Variables captured by traced tf.functions, each once, to track on a tf.Module.

  Args:
    functions: tf.functions with an input signature (`get_concrete_function()` needs no argument).

  Returns:
    A list of tf.Variable, in first-capture order, without duplicates.
  """
  seen, variables = set(), []
  for function in functions:
    for variable in function.get_concrete_function().variables:
      if id(variable) not in seen:
        seen.add(id(variable))
        variables.append(variable)
  return variables
