#!/bin/bash
# The session-10 online cells, one at a time (1 thread, niced), compress defaults under the online budget.
cd "$(dirname "$0")/../../.." || exit 1
export DATAFREE_SUITE=/work/cache/suite PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE
for cell in "$@"; do
    m=${cell%%:*}; t=${cell##*:}
    echo "$(date -u +%H:%M:%S) start $m x $t ($(git rev-parse --short HEAD))"
    nice -n 10 /work/main/.venv/bin/python bench/fidelity.py --teachers "$t" --methods "$m" --no-baseline \
        --threads 1 --seed 0 --out bench/results/s10_online --tag "${m}_${t}" > "bench/results/s10_online/${m}_${t}.log" 2>&1
    echo "$(date -u +%H:%M:%S) end $m x $t rc=$?"
done
