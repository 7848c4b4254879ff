#!/usr/bin/env bash
# nextest setup script (.config/nextest.toml): before the tests run, installs the tools that the
# cross-checks need -- .venv with onnx, onnxruntime, numpy and tritonclient
# (scripts/setup-python.sh) and libonnxruntime.so in .ort/lib (scripts/fetch-onnxruntime.sh) --
# and hands their paths to every test through $NEXTEST_ENV. Both steps do nothing when the
# tools are already there. Paths already set by the caller (KILN_PYTHON, ORT_DYLIB_PATH) win.
#
# When a tool cannot be installed (no network to PyPI, say), the run goes on, and every test
# that needs the tool fails with the reason below: a cross-check never passes without running.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
env_out=${NEXTEST_ENV:-/dev/null}
failed=()

if [ -z "${KILN_PYTHON:-}" ]; then
  if scripts/setup-python.sh >&2; then
    echo "KILN_PYTHON=$root/.venv/bin/python" >>"$env_out"
  else
    failed+=("scripts/setup-python.sh (Python cross-check tools)")
  fi
fi
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  if scripts/fetch-onnxruntime.sh >&2; then
    echo "ORT_DYLIB_PATH=$root/.ort/lib/libonnxruntime.so" >>"$env_out"
  else
    failed+=("scripts/fetch-onnxruntime.sh (ONNX Runtime library)")
  fi
fi
if [ ${#failed[@]} -gt 0 ]; then
  msg="could not install: ${failed[*]}; the cross-check tests will fail until it works (see the output above)"
  echo "warning: $msg" >&2
  echo "KILN_TOOL_SETUP_ERROR=$msg" >>"$env_out"
fi
exit 0
