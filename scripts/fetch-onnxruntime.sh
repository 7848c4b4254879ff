#!/usr/bin/env bash
# Fetches libonnxruntime.so from the PyPI `onnxruntime` wheel into .ort/lib, where kiln's ort
# engine finds it (or point ORT_DYLIB_PATH / --ort-lib at any other copy). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${ORT_VERSION:-1.31.1}"
dest=.ort/lib
if compgen -G "$dest/libonnxruntime.so*" >/dev/null; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  "onnxruntime==$version" -d "$tmp"
mkdir -p "$dest"
python3 - "$tmp" "$dest" <<'PY'
import pathlib, sys, zipfile
src, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("onnxruntime-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        base = name.rsplit("/", 1)[-1]
        if name.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime.so"):
            (dest / base).write_bytes(z.read(name))
            print(f"fetched {dest / base}")
PY
# The engine loads the versioned file through this stable name.
lib=$(ls "$dest"/libonnxruntime.so.* | head -n 1)
ln -sf "$(basename "$lib")" "$dest/libonnxruntime.so"
