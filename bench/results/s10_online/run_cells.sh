#!/bin/bash
# The session-10 online cells, one at a time (1 thread, niced), compress defaults under the online budget.
# A cell is METHOD:TEACHER, or METHOD:TEACHER:BATCH for a user-given KD batch (--batch-size; tag _bBATCH).
cd "$(dirname "$0")/../../.." || exit 1
export DATAFREE_SUITE=/work/cache/suite PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE
for cell in "$@"; do
    IFS=: read -r m t b <<< "$cell"
    tag="${m}_${t}${b:+_b$b}"
    echo "$(date -u +%H:%M:%S) start $tag ($(git rev-parse --short HEAD))"
    nice -n 10 /work/main/.venv/bin/python bench/fidelity.py --teachers "$t" --methods "$m" --no-baseline \
        --threads 1 --seed 0 ${b:+--batch-size "$b"} --out bench/results/s10_online --tag "$tag" \
        > "bench/results/s10_online/$tag.log" 2>&1
    rc=$?
    echo "$(date -u +%H:%M:%S) end $tag rc=$rc"
done
