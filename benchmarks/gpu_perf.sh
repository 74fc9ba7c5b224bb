#!/usr/bin/env bash
# bench perf at paper size on a GPU: every paper backbone (random weights, full size), every method, batch 32,
# bf16 autocast and fused attention (the CUDA defaults), one JSON per backbone in $OUT; then one bf16-vs-fp32
# logit check. Runs from the repository root:
#
#     PYTHONPATH=. OUT=/some/dir bash benchmarks/gpu_perf.sh
#
# Total time is capped (PERF_DEADLINE_S, default 330 s; each backbone at most 75 s). A backbone that fails
# or runs out of time is reported and the others still run; the exit status is 1 if any failed.
# Overrides (used by the CPU test): PYTHON, PERF_BACKBONES, PERF_DEVICE, PERF_ARGS, PERF_STEPS, PERF_WARMUP.
set -uo pipefail
PY=${PYTHON:-python3}
: "${OUT:?set OUT to the output folder}"
BACKBONES=${PERF_BACKBONES:-clip_text roberta dinov2 deit imagebind_audio ssast}
DEVICE=${PERF_DEVICE:-cuda}
ARGS=${PERF_ARGS:---paper --full-size --batch 32}
STEPS=${PERF_STEPS:-10}
WARMUP=${PERF_WARMUP:-3}
DEADLINE=${PERF_DEADLINE_S:-330}
PER_BACKBONE=${PERF_BACKBONE_S:-75}
mkdir -p "$OUT"
start=$SECONDS
failed=0

budget() {  # seconds left for the next command: min(cap, deadline - elapsed)
  local left=$((DEADLINE - (SECONDS - start)))
  ((left > $1)) && left=$1
  echo "$left"
}

"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name() if torch.cuda.is_available() else '')" | tee "$OUT/environment.txt"

for b in $BACKBONES; do
  t=$(budget "$PER_BACKBONE")
  if ((t < 10)); then echo "SKIPPED $b: time budget spent"; failed=1; continue; fi
  # shellcheck disable=SC2086  # ARGS is a list of options
  if timeout "$t" "$PY" -m peft3d perf -b "$b" --device "$DEVICE" $ARGS --steps "$STEPS" --warmup "$WARMUP" \
      -m linear -m full -m prompt -m adapter -m lora -m any2point --json >"$OUT/perf_$b.json" 2>"$OUT/perf_$b.err"; then
    "$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], 'floor', r['floor_ms'], 'ms;', \
', '.join(f\"{k} {v['ms']:.0f} ms x{v['ratio']:.2f} {v['samples_per_s']:.0f}/s {v['peak_mb']} MB\" \
for k, v in r['methods'].items()))" "$OUT/perf_$b.json" "$b"
  else
    echo "FAILED $b (exit $?, limit ${t}s): see $OUT/perf_$b.err"; tail -3 "$OUT/perf_$b.err"; failed=1
  fi
done

first=${BACKBONES%% *}
[[ " $BACKBONES " == *" dinov2 "* ]] && first=dinov2
t=$(budget 60)
# shellcheck disable=SC2086
if ((t >= 10)) && timeout "$t" "$PY" benchmarks/bf16_check.py --backbone "$first" --device "$DEVICE" \
    $(echo " $ARGS " | sed 's/ --full-size / /') >"$OUT/bf16_vs_fp32.json" 2>"$OUT/bf16_vs_fp32.err"; then
  cat "$OUT/bf16_vs_fp32.json"; echo
else
  echo "FAILED bf16 check: see $OUT/bf16_vs_fp32.err"; failed=1
fi
echo "total $((SECONDS - start)) s"
exit $failed
