#!/bin/bash
# CMI BN/CE balance probe: one round of 128 images x 200 steps (seed 0), balance off vs R 26, per teacher.
export DATAFREE_SUITE=/work/cache/suite OMP_WAIT_POLICY=PASSIVE
cd /work/wt-s9cmibal
for t in resnet18_32 mobilenetv2_32 vgg8_bn_32 resnet8_digits; do
  card=/work/cache/suite/$t/model.json; [ $t = resnet8_digits ] && card=resnet8_digits
  for r in 26 0; do
    echo "== $t R=$r"
    nice -n 10 /work/main/.venv/bin/python bench/batch_probe.py --method cmi --teacher $card \
      --batch-size 128 --steps 200 --report 1,50,100,200 --set bn_ce_max_ratio=$r
  done
done
echo DONE
