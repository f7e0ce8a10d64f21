#!/bin/bash
# Session 17: compress on a BN-less teacher at compress's default 2 threads, seeds 0-2, with the new default
# student and an old one (--student OLD); one run at a time on an idle machine, no noise baseline.
#   bash bench/results/s17_2threads/run.sh TAG_PREFIX TEACHER METHOD OLD_STUDENT
# The three series of session 17 (tags l5_auto_*, l5_zskt_*, p32_zskt_*):
#   bash bench/results/s17_2threads/run.sh l5_auto lenet5_digits auto lenet5_half
#   bash bench/results/s17_2threads/run.sh l5_zskt lenet5_digits zskt lenet5_half
#   bash bench/results/s17_2threads/run.sh p32_zskt /work/cache/suite/plain_32/model.json zskt lenet5
cd "$(dirname "$0")/../../.." || exit 2
D=bench/results/s17_2threads
prefix=$1; teacher=$2; method=$3; old=$4
for s in 0 1 2; do
  for st in default "$old"; do
    tag=${prefix}_${st}_s$s; extra=(); [ "$st" = default ] || extra=(--student "$st")
    /usr/bin/time -f "%e s wall %U s user %S s sys" -o "$D/$tag.time" .venv/bin/datafree compress \
      --teacher "$teacher" --method "$method" --seed "$s" --threads 2 --no-baseline -q --out "/tmp/s17/$tag" \
      "${extra[@]}" > "$D/$tag.log" 2>&1
    cp "/tmp/s17/$tag/report.json" "$D/$tag.report.json"
  done
done
