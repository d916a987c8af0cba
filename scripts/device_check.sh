#!/usr/bin/env bash
# The GPU checks of issues 2, 3 and 5, for a session lent a device machine (an H100 or H200
# whose image has PyTorch and transformers but not the server's stack). Prepare here:
#   bash scripts/device_wheels.sh      # FastAPI, uvicorn, openai wheels into .whl/
# then through the device tool: run(command="bash scripts/device_check.sh a", carry=[".whl"],
# timeout_s=600), and the same with "b". Two phases, so that what the first finds can be
# mended before the second: a = the CUDA tests (tests/gpu), `bench switch` (issue 3) and
# `bench serve` (issue 5); b = `bench decode` on a 1.1B model (issue 2). No argument: both.
# Results land in $OUT: gpu.txt, tests.txt, switch.json, serve.json, decode.json and logs.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/coeflow-device}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
} > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

step() {  # name, seconds, command...  (stdout -> $OUT/name.json, stderr -> $OUT/name.log)
  local name=$1 secs=$2; shift 2
  echo "== $name (limit ${secs}s) $(date +%T)"
  timeout "$secs" "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"
  echo "== $name rc=$? $(date +%T)"; tail -4 "$OUT/$name.log"
}
phase=${1:-ab}
if [[ $phase == *a* ]]; then
  # the CUDA paths: CUDA graphs across expert switches, the pinned pool and copy stream, the server
  echo "== tests $(date +%T)"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu > "$OUT/tests.txt" 2>&1
  echo "== tests rc=$? $(date +%T)"; tail -5 "$OUT/tests.txt"
  # issue 3: host -> device from pinned memory on the copy stream; TTFT after a switch vs
  # from_pretrained (straight to the GPU); torch's default threads for every contender
  step switch 120 python3 -m coeflow bench switch --sizes 300MB 1.2GB --compute-threads 0 --json
  # issue 5: the server under Zipf load against the reloading baseline, on the GPU
  step serve 240 python3 -m coeflow bench serve --json
fi
if [[ $phase == *b* ]]; then
  # issue 2: a 1B+ config in bf16 at batch 1 against the device's copy bandwidth (and batch 8)
  step decode 200 python3 -m coeflow bench decode --device cuda --models 1b --dtypes bf16 --batches 1 8 --json
fi
