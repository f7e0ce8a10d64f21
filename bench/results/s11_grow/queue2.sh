#!/bin/bash
# run each line of the job file when fewer than 2 bench/fidelity.py processes run
while IFS= read -r job; do
  [ -z "$job" ] && continue
  while [ "$(pgrep -f 'bench/fidelity.py' | wc -l)" -ge 2 ]; do sleep 10; done
  echo "$(date +%T) start $job"
  bash -c "$job" &
  sleep 20
done < "$1"
wait
echo "$(date +%T) done"
