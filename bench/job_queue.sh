#!/bin/bash
# A job queue for long bench series on a shared machine: start it once per core; the workers share
# DIR/jobs.txt (one job per line, taken under a lock, so lines may be appended while they run) and stop
# when it is empty. Logs: DIR/TAG.log, start/end times: DIR/queue.log.
#
#   bash bench/job_queue.sh DIR ablation   # job line: TAG TEACHER METHOD SEED [bench/online_ablation.py args...]
#                                          # (TEACHER: a shipped name or a suite name under $DATAFREE_SUITE)
#   bash bench/job_queue.sh DIR compress   # job line: TAG [datafree compress args...] (1 thread, no baseline);
#                                          # also DIR/TAG.time (wall, CPU) and DIR/TAG.report.json
#   bash bench/job_queue.sh DIR distill    # job line: TAG [datafree distill args...] (1 thread), e.g. --method
#                                          # nayer --pool; DIR/TAG.time and DIR/TAG.model.json (the log has the
#                                          # student's accuracy)
cd "$(dirname "$0")/.." || exit 2
D=$1; MODE=$2
case $MODE in ablation|compress|distill) ;; *) echo "usage: bench/job_queue.sh DIR ablation|compress|distill" >&2; exit 2 ;; esac
SUITE=${DATAFREE_SUITE:-/work/cache/suite}
while true; do
  job=$(flock "$D/jobs.lock" bash -c "head -n1 '$D/jobs.txt'; sed -i 1d '$D/jobs.txt'")
  [ -z "$job" ] && break
  set -- $job
  tag=$1; shift
  echo "$(date +%T) start $tag" >> "$D/queue.log"
  if [ "$MODE" = ablation ]; then
    t=$1; m=$2; s=$3; shift 3
    case $t in *_digits) tp=$t ;; *) tp=$SUITE/$t/model.json ;; esac
    OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python bench/online_ablation.py --teacher "$tp" --method "$m" \
      --seed "$s" --threads 1 --diagnose --json "$D/runs.jsonl" "$@" > "$D/$tag.log" 2>&1
    rc=$?
  else
    out=${TMPDIR:-/tmp}/job_queue/$tag
    rm -rf "$out"
    extra=(--no-baseline); [ "$MODE" = distill ] && extra=()
    /usr/bin/time -f "%e s wall %U s user %S s sys" -o "$D/$tag.time" env OMP_WAIT_POLICY=PASSIVE nice -n 10 \
      .venv/bin/datafree "$MODE" --threads 1 "${extra[@]}" -q --out "$out" "$@" > "$D/$tag.log" 2>&1
    rc=$?
    cp "$out/report.json" "$D/$tag.report.json" 2>/dev/null
    cp "$out/model.json" "$D/$tag.model.json" 2>/dev/null
  fi
  echo "$(date +%T) end $tag rc=$rc" >> "$D/queue.log"
done
