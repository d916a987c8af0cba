#!/usr/bin/env bash
# Wheels the GPU machine's image lacks (it has torch, transformers, safetensors, tokenizers,
# jinja2, pyyaml, prometheus-client; not the server's stack), downloaded here into .whl/
# (git-ignored) for Python 3.12 on x86-64 Linux. scripts/device_check.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl fastapi==0.165.0 uvicorn==0.54.0 openai==3.57.0  # the versions CI tests with
du -sh .whl
