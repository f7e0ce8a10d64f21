#!/bin/bash
# Session 43's A/B: the same ResNet-18 cells on the code before the small-map price (HEAD a1f8b66, a worktree at
# /tmp/oldcode sharing this checkout's .venv, its modules first on PYTHONPATH), as a worker of its own queue that
# starts whenever fewer than two compress workers run (the new code's queue, bench/results/s43, finishing).
#   git worktree add /tmp/oldcode a1f8b66 && ln -s /work/main/.venv /tmp/oldcode/.venv
#   nohup bash bench/results/s43/ab_old/run.sh > /dev/null 2>&1 &
D=/work/main/bench/results/s43/ab_old
started=0
while [ $started -lt 2 ] && [ -s $D/jobs.txt ]; do
  n=$(pgrep -f "job_queue.sh .* compress" | wc -l)
  if [ "$n" -lt 2 ]; then
    PYTHONPATH=/tmp/oldcode nohup bash /tmp/oldcode/bench/job_queue.sh $D compress > /dev/null 2>&1 &
    started=$((started + 1)); sleep 5
  else
    sleep 20
  fi
done
