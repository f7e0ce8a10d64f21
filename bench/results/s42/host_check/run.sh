#!/bin/bash
# Same-host check (session 42): session 23's code (d0350f1) and HEAD, each with its own resnet8_digits DeepInversion
# job, two 1-thread runs side by side as in sessions 22 and 41 (compare each with its own earlier figure).
D=/work/main/bench/results/s42/host_check; mkdir -p $D
cd /tmp/oldcode && /usr/bin/time -f "%e s wall %U s user %S s sys" -o $D/old_d0350f1_di_r8_s0.time env OMP_WAIT_POLICY=PASSIVE nice -n 10 \
  /work/main/.venv/bin/python -c "import sys; sys.argv=['datafree','compress','--teacher','assets/teachers/resnet8_digits.json','--method','deepinversion','--set','bn_weight=1','--seed','0','--no-baseline','--threads','1','-q','--out','/tmp/oldrun']; from cli import main; main()" > $D/old_d0350f1_di_r8_s0.log 2>&1 &
cd /work/main && /usr/bin/time -f "%e s wall %U s user %S s sys" -o $D/head_di_r8_s0.time env OMP_WAIT_POLICY=PASSIVE nice -n 10 \
  .venv/bin/datafree compress --teacher resnet8_digits --method deepinversion --seed 0 --no-baseline --threads 1 -q --out /tmp/headrun > $D/head_di_r8_s0.log 2>&1 &
wait
cp /tmp/oldrun/report.json $D/old_d0350f1_di_r8_s0.report.json; cp /tmp/headrun/report.json $D/head_di_r8_s0.report.json
cat $D/*.time
