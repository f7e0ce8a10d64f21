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
#
# THREADS=N (default 1) is the compress/distill runs' --threads, with OMP_WAIT_POLICY=PASSIVE (workers side by
# side); THREADS=auto leaves both to the CLI (torch's thread count, cli.py's wait policy): a run as a user
# starts it, for wall times taken with one worker on an otherwise idle machine. BASELINE=1 keeps compress's
# noise baseline (a default run's whole cost; the default 0 passes --no-baseline).
cd "$(dirname "$0")/.." || exit 2
D=$1; MODE=$2
case $MODE in ablation|compress|distill) ;; *) echo "usage: bench/job_queue.sh DIR ablation|compress|distill" >&2; exit 2 ;; esac
SUITE=${DATAFREE_SUITE:-/work/cache/suite}
THREADS=${THREADS:-1}
if [ "$THREADS" = auto ]; then run_env=(); thr=(); else run_env=(OMP_WAIT_POLICY=PASSIVE); thr=(--threads "$THREADS"); fi
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
    extra=(--no-baseline); { [ "$MODE" = distill ] || [ "${BASELINE:-0}" = 1 ]; } && extra=()
    /usr/bin/time -f "%e s wall %U s user %S s sys" -o "$D/$tag.time" env "${run_env[@]}" nice -n 10 \
      .venv/bin/datafree "$MODE" "${thr[@]}" "${extra[@]}" -q --out "$out" "$@" > "$D/$tag.log" 2>&1
    rc=$?
    cp "$out/report.json" "$D/$tag.report.json" 2>/dev/null
    cp "$out/model.json" "$D/$tag.model.json" 2>/dev/null
  fi
  echo "$(date +%T) end $tag rc=$rc" >> "$D/queue.log"
done
