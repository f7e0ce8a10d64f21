#!/usr/bin/env bash
# End-to-end `datafree compress` on one teacher: today's fp32 path against the defaults of issue 13
# (--precision auto: bf16 pixel synthesis on a CPU with native bf16, fp32 KD) with --channels-last.
# A short budget (256 images, 100 DeepInversion steps, 10 KD epochs, no noise baseline), one seed.
#
#   TEACHER=/work/cache/suite/resnet18_32/model.json bash bench/compress_precision.sh
#
# Writes bench/results/issue13/compress_<teacher>_{fp32,auto_cl}.json (the report.json of each run)
# and compress_wall.txt (wall seconds and the load average at the end of each run). The runs are
# sequential, so background load can differ between them: compare stages_seconds with that in mind.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)"
PY="${PYTHON:-python}"
TEACHER="${TEACHER:-/work/cache/suite/resnet18_32/model.json}"
NAME="${NAME:-resnet18_32}"
OUT=bench/results/issue13
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
: > "$OUT/compress_wall.txt"
for cfg in "fp32" "auto --channels-last"; do
  tag=$(echo "$cfg" | sed 's/ --channels-last/_cl/')
  s=$(date +%s.%N)
  nice -n 10 "$PY" -c "import cli; cli.main()" compress --teacher "$TEACHER" --out "$TMP/$tag" -n 256 --iterations 100 \
    --epochs 10 --no-baseline --threads 2 --precision $cfg
  e=$(date +%s.%N)
  echo "$cfg wall $(echo "$e - $s" | bc) load $(cut -d' ' -f1 /proc/loadavg)" >> "$OUT/compress_wall.txt"
  cp "$TMP/$tag/report.json" "$OUT/compress_${NAME}_${tag}.json"
done
cat "$OUT/compress_wall.txt"
