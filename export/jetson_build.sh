#!/usr/bin/env bash
# Build edgeface TensorRT engines on a Jetson with JetPack's own TensorRT and Python.
#
#   export/jetson_build.sh extd64.onnx [--fp16 | --int8 --calibration-images photos/] [build-engine options]
#
# JetPack installs TensorRT's Python bindings for the system Python (python3-libnvinfer), so the venv
# sees system site-packages; edgeface's runtime and the ONNX tools come from pip. The GPU runtime's extra
# matches JetPack's CUDA: cuda12 on JetPack 6 (default below), cuda on JetPack 7. The engine is written
# next to the ONNX (model.engine) and only runs on this Jetson model and JetPack release.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${EDGEFACE_JETSON_VENV:-$HOME/.venvs/edgeface-jetson}"
cuda_major="$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p')"
cuda_major="${cuda_major:-12}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install --upgrade pip
    extra="cuda12"
    [ "$cuda_major" -ge 13 ] && extra="cuda"
    "$venv/bin/pip" install -e "$here[$extra]" onnx onnxconverter-common
fi
"$venv/bin/python" -c "import tensorrt; print('TensorRT', tensorrt.__version__)" || {
    echo "JetPack's TensorRT Python bindings are missing: sudo apt install python3-libnvinfer" >&2; exit 1; }
exec "$venv/bin/edgeface" build-engine "$@"
