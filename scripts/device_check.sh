#!/usr/bin/env bash
# The GPU checks of issues 2, 3 and 5 in one run, for a session lent a device machine (an H100
# or H200 whose image has PyTorch and transformers but not the server's stack). Prepare here:
#   bash scripts/device_wheels.sh      # FastAPI, uvicorn, openai wheels into .whl/
# then through the device tool: run(command="bash scripts/device_check.sh", carry=[".whl"],
# timeout_s=600). Results land in $OUT: gpu.txt, decode.json, switch.json, serve.json and
# their logs. Budgets: decode ~4 min (writes a 4.4 GB 1.1B checkpoint), switch ~2, serve ~3.
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

step() {  # name, seconds, command...
  local name=$1 secs=$2; shift 2
  echo "== $name (limit ${secs}s)"
  timeout "$secs" "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"
  echo "== $name rc=$?"; tail -3 "$OUT/$name.log"
}
# issue 2: a 1B+ config in bf16 at batch 1 against the device's copy bandwidth (and batch 8)
step decode 270 python3 -m coeflow bench decode --device cuda --models medium 1b --dtypes bf16 --batches 1 8 --json
# issue 3: host -> device from pinned memory on the copy stream; TTFT after a switch vs from_pretrained
step switch 150 python3 -m coeflow bench switch --sizes 300MB 1.2GB --json
# issue 5: the server under Zipf load against the reloading baseline, on the GPU
step serve 170 python3 -m coeflow bench serve --json
