#!/bin/bash
# s13 runs through the real command, two workers sharing jobs.txt. Each job line: TAG ARGS... (datafree compress ARGS)
cd /work/main
D=bench/results/s13_cli
while true; do
  job=$(flock $D/jobs.lock bash -c "head -n1 $D/jobs.txt; sed -i 1d $D/jobs.txt")
  [ -z "$job" ] && break
  set -- $job
  tag=$1; shift 1
  echo "$(date +%T) start $tag" >> $D/queue.log
  rm -rf /tmp/s13cli/$tag
  /usr/bin/time -f "%e s wall %U s user %S s sys" -o $D/$tag.time env OMP_WAIT_POLICY=PASSIVE nice -n 10 \
    .venv/bin/datafree compress --threads 1 --no-baseline -q --out /tmp/s13cli/$tag "$@" > $D/$tag.log 2>&1
  rc=$?
  cp /tmp/s13cli/$tag/report.json $D/$tag.report.json 2>/dev/null
  echo "$(date +%T) end $tag rc=$rc" >> $D/queue.log
done
