#!/usr/bin/env bash
# Creates .venv with the tools kiln's tests use to cross-check its ONNX files: the `onnx`
# checker, ONNX Runtime (plus numpy) and the Triton HTTP client. Idempotent: does nothing when they are already there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -x .venv/bin/python ] && .venv/bin/python -c 'import onnx, onnxruntime, numpy, tritonclient.http' 2>/dev/null; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements-crosscheck.txt
