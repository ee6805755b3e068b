"""Data-parallel pipelines over many recordings (Apache Beam, the optional `beam` extra)."""
