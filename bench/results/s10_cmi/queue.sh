#!/bin/bash
# Session 10's cells, one after the other, in the order they ran (run.sh: one cell, 1 thread, nice 10).
cd "$(dirname "$0")/../../.."
bash bench/results/s10_cmi/run.sh resnet18_32 512 100 0      # the split: 2 rounds of 256 x 100 steps
bash bench/results/s10_cmi/run.sh vgg8_bn_32 512 100 0       # the split on VGG-8
bash bench/results/s10_cmi/run.sh resnet18_32 512 100 1      # the split, seed 1
bash bench/results/s10_cmi/run.sh resnet18_32 256 200 0 42   # the default's images, the split's KD steps
bash bench/results/s10_cmi/run.sh resnet18_32 256 200 1      # the default's plan (256 x 200), seed 1
bash bench/results/s10_cmi/run.sh mobilenetv2_32 1024 100 0  # the split on MobileNetV2 (if time)
# the VGG-8 split with the budget's KD batch of 64 (the budget then plans 22 epochs x 28 of 64)
DATAFREE_SUITE=/work/cache/suite PYTHONPATH=. OMP_WAIT_POLICY=PASSIVE nice -n 10 /work/main/.venv/bin/python \
    bench/fidelity.py --teachers vgg8_bn_32 --methods cmi --no-baseline --threads 1 --seed 0 --num-images 512 \
    --iterations 100 --batch-size 64 --out bench/results/s10_cmi --tag cmi_vgg8_bn_32_n512_i100_s0_b64 \
    > bench/results/s10_cmi/cmi_vgg8_bn_32_n512_i100_s0_b64.log 2>&1
