#!/bin/bash
# usage: fast_screen.sh TAG ARGS...
cd /work/main
tag=$1; shift
DATAFREE_SUITE=/work/cache/suite PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/python bench/fidelity.py --teachers resnet8_digits --methods fast --no-baseline --threads 1 --out bench/results/s11_fast --tag $tag "$@" > /tmp/s11/$tag.log 2>&1
echo "rc=$?" >> /tmp/s11/$tag.log
