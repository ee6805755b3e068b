"""Command-line modes: config -> explicit library calls (one file per mode)."""
