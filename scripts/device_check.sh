#!/usr/bin/env bash
# The GPU checks of issues 2, 3 and 5, for a session lent a device machine (an H100 or H200
# whose image has PyTorch and transformers but not the server's stack). Prepare here:
#   bash scripts/device_wheels.sh      # FastAPI, uvicorn, openai wheels into .whl/
# then through the device tool: run(command="bash scripts/device_check.sh", carry=[".whl"],
# timeout_s=600). Steps, in order (name some to run only those), with their times on an H200:
# tests (tests/gpu, 45 s), switch (`bench switch`, issue 3, 50 s), serve (`bench serve`, issue
# 5, 145 s in session 6), serve-large (the same with 1.2 GB experts, 259 s in session 6),
# decode (`bench decode` on a 1.1B model, issue 2, 85 s before the Triton engine was added):
# about 10 minutes in all, more than one call allows: name the steps. Not by default:
# decode-7b (on a 6.7B model), decode-quant (issue 22: int8 and int4 on the 1B model), profile
# (scripts/profile_decode.py, 140 s), profile-7b.
# Results land in $OUT: gpu.txt, tests.txt, log.txt (every step's stderr) and a .json per
# benchmark step.
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

step() {  # name, seconds, command...  (stdout -> $OUT/name.json, stderr -> $OUT/log.txt)
  local name=$1 secs=$2; shift 2
  echo "== $name (limit ${secs}s) $(date +%T)" | tee -a "$OUT/log.txt"
  timeout "$secs" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  local rc=$?
  cat "$OUT/$name.err" >> "$OUT/log.txt"; tail -4 "$OUT/$name.err"; rm -f "$OUT/$name.err"
  echo "== $name rc=$rc $(date +%T)" | tee -a "$OUT/log.txt"
}
steps=${*:-tests switch serve serve-large decode}
for name in $steps; do case $name in
tests)  # the CUDA paths: graphs across expert switches and threads, the pinned pool, the server
  echo "== tests $(date +%T)"
  timeout 100 python3 -m pytest -q -p no:cacheprovider tests/gpu > "$OUT/tests.txt" 2>&1
  echo "== tests rc=$? $(date +%T)"; tail -5 "$OUT/tests.txt" ;;
switch)  # issue 3: host -> device from pinned memory on the copy stream; TTFT after a switch vs
  # from_pretrained (straight to the GPU); issue 22: a 1-bit delta's switch (its delta copied,
  # the expert rebuilt in its slot); torch's default threads for every contender
  # (8 read threads: the machine has 16 cores)
  step switch 120 python3 -m coeflow bench switch --sizes 300MB 1.2GB --compute-threads 0 --load-threads 8 --json ;;
serve)  # issue 5: the server under Zipf load against the reloading baseline, on the GPU
  step serve 220 python3 -m coeflow bench serve --json ;;
serve-large)  # the same with experts of 1.2 GB, nearer a CoE's real experts (the paper's are 7B)
  step serve-large 300 python3 -m coeflow bench serve --expert-size 1.2GB --requests 200 \
    --servers coeflow baseline ceiling --json ;;
decode)  # issue 2: a 1B config in bf16 at batch 1 against the device's copy bandwidth (and batch 8),
  # the fused engine with (its default on a GPU) and without coeflow's Triton kernel for
  # one-row products
  step decode 180 python3 -m coeflow bench decode --device cuda --models 1b --dtypes bf16 --batches 1 8 \
    --engines hf-transformers coeflow-eager coeflow-fused coeflow-fused-cublas --json ;;
decode-quant)  # issue 22: the 1B config in bf16, int8 and int4 at batch 1, the packed layers through
  # coeflow's Triton kernel (the quantized copies are made on the CPU first: a minute)
  step decode-quant 240 python3 -m coeflow bench decode --device cuda --models 1b --dtypes bf16 int8 int4 \
    --batches 1 --engines coeflow-fused --json ;;
decode-7b)  # the same on Llama 2 7B's shape (the paper's experts), batch 1
  step decode-7b 330 python3 -m coeflow bench decode --device cuda --models 7b --dtypes bf16 --batches 1 \
    --engines hf-transformers coeflow-eager coeflow-fused coeflow-fused-cublas --json ;;
profile)  # issue 2: where the decode step's device time goes (products alone, graph replay, kernels)
  step profile 300 python3 scripts/profile_decode.py --models 1b 7b
  mv "$OUT/profile.json" "$OUT/profile.txt" ;;
profile-7b)  # the 7B step only (session 6: 130 s with --autotune, which is off here)
  step profile-7b 200 python3 scripts/profile_decode.py --models 7b
  mv "$OUT/profile-7b.json" "$OUT/profile-7b.txt" ;;
*) echo "unknown step $name"; exit 2 ;;
esac; done
