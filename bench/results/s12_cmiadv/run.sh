#!/bin/bash
# s12 screen: CMI in its published loop (the growing pool) with the paper's adversarial term.
# usage: run.sh TAG SEED [extra args...]
tag=$1; seed=$2; shift 2
cd /work/main
/usr/bin/time -v env OMP_WAIT_POLICY=PASSIVE nice -n 10 .venv/bin/datafree distill --teacher resnet8_digits --method cmi --pool \
  --seed $seed --threads 1 --out /tmp/s12/$tag "$@" > bench/results/s12_cmiadv/$tag.log 2>&1
cp /tmp/s12/$tag/report.json bench/results/s12_cmiadv/$tag.report.json 2>/dev/null
