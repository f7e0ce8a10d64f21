#!/bin/bash
# s12 screens, two workers sharing jobs.txt. Each job line: TAG TEACHER METHOD SEED [online_ablation args...]
# (s13: replay of earlier generated images)
cd /work/main
D=bench/results/s13_replay
while true; do
  job=$(flock $D/jobs.lock bash -c "head -n1 $D/jobs.txt; sed -i 1d $D/jobs.txt")
  [ -z "$job" ] && break
  set -- $job
  tag=$1; t=$2; m=$3; s=$4; shift 4
  case $t in *_digits) tp=$t ;; *) tp=/work/cache/suite/$t/model.json ;; esac
  echo "$(date +%T) start $tag" >> $D/queue.log
  OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python bench/online_ablation.py --teacher $tp --method $m --seed $s \
    --threads 1 --diagnose --json $D/runs.jsonl "$@" > $D/$tag.log 2>&1
  echo "$(date +%T) end $tag rc=$?" >> $D/queue.log
done
