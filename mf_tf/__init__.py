"""mf_tf: MetaFuse multi-view human pose fusion in TensorFlow 2 / Keras 3."""

__version__ = "0.1.0"
