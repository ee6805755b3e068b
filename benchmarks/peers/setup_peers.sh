#!/usr/bin/env bash
# Creates .venv-peers, the environment of the benchmark peers that cannot share mf_tf's: aniposelib
# needs opencv-contrib (cv2.aruco), whose cv2 module clashes with mf_tf's opencv-python-headless.
#
#   bash benchmarks/peers/setup_peers.sh        (from anywhere; PYTHON=python3.11 to choose)
#
# benchmarks/calibration_peers.py runs the peers with .venv-peers/bin/python in a subprocess.
set -euo pipefail
cd "$(dirname "$0")/../.."
"${PYTHON:-python3}" -m venv .venv-peers
.venv-peers/bin/pip install --no-deps -r benchmarks/peers/requirements.txt
.venv-peers/bin/python -c "import aniposelib.cameras, cv2.aruco
print('aniposelib', aniposelib.__version__, 'ready in .venv-peers')"
