#!/usr/bin/env bash
# Every GPU figure of RESULTS.md in one short run (about 8 minutes on an H100/H200):
# speed cases first, one at a time, then the quality runs two at a time.
#
#   OUT=/tmp/gpu-rows NAPARI_CEM_VNC=../shared/data/vnc bash benchmarks/gpu_session.sh [BUDGET_S]
#
# Each case writes OUT/NAME.log (its rows are the lines starting with "|"); a case that
# would run past BUDGET_S seconds (default 540) is cut short by `timeout` and says so.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-rows}
BUDGET=${1:-540}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-src}
# CUDA-side timings only; keep the CPU thread pools from fighting when two cases share the machine.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

step() {  # step NAME MAX_SECONDS CMD...
  local name=$1 max=$2; shift 2
  local left=$((BUDGET - SECONDS))
  [ "$left" -lt "$max" ] && max=$left
  if [ "$max" -lt 20 ]; then echo "skipped (budget spent)" > "$OUT/$name.log"; return; fi
  echo "== $name (at ${SECONDS}s, limit ${max}s)"
  timeout "$max" "$@" > "$OUT/$name.log" 2>&1
  echo "rc=$? after ${SECONDS}s" >> "$OUT/$name.log"
  grep -h "^|" "$OUT/$name.log" || tail -n 5 "$OUT/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch, segmentation_models_pytorch as smp; print(torch.__version__, smp.__version__, torch.cuda.get_device_name(0))" >> "$OUT/gpu.txt" 2>&1
for m in tifffile zarr numba skimage; do python3 -c "import $m; print('$m', $m.__version__)" >> "$OUT/gpu.txt" 2>&1 || echo "$m missing" >> "$OUT/gpu.txt"; done

B=benchmarks
# the CUDA code paths first (tests/test_gpu_paths.py; pytest may be absent on a bare machine)
step gpu_tests 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_paths.py
step ft_speed_frozen 90 python3 $B/bench_finetune.py --case speed --device cuda --batch 16 --crop 512 --freeze encoder --iterations 100
step ft_speed_none 90 python3 $B/bench_finetune.py --case speed --device cuda --batch 16 --crop 512 --freeze none --iterations 100
step ft_speed_plain 90 python3 $B/bench_finetune.py --case speed --device cuda --batch 16 --crop 512 --plain --iterations 100
step infer_speed 120 python3 $B/bench_infer.py --case speed --device cuda --slices 256
step pretrain_speed 120 python3 $B/bench_pretrain.py --case speed --device cuda --batch 128 --steps 8 --queue 65536

# Quality: pre-training "does it help", the fine-tuning quality runs and their ablations in
# three lanes (wall times of these lanes are measured while they share the GPU).
( step pretrain_helps 330 python3 $B/bench_pretrain.py --case helps --device cuda --minutes 2.5 \
    --epochs 200 --batch 128 --queue 4096 --iterations 300 --eval-at 100,300 ) &
( step ft_quality_dense 150 python3 $B/bench_finetune.py --case quality --device cuda --iterations 600 --eval-at 100,300,600
  step ft_quality_3slices 90 python3 $B/bench_finetune.py --case quality --device cuda --few 3slices --iterations 300 --eval-at 100,300
  step ft_quality_5rois 90 python3 $B/bench_finetune.py --case quality --device cuda --few 5rois --iterations 300 --eval-at 100,300
  step infer_zarr 150 python3 $B/bench_infer.py --case zarr --device cuda ) &
(
  # the paper's augmentations and fp32 against the default (bf16/fp16 autocast must not cost IoU)
  step ft_quality_cem500k 60 python3 $B/bench_finetune.py --case quality --device cuda --iterations 300 --eval-at 100,300 --augment cem500k
  step ft_quality_fp32 60 python3 $B/bench_finetune.py --case quality --device cuda --iterations 300 --eval-at 100,300 --amp off ) &
wait
echo "done after ${SECONDS}s"
