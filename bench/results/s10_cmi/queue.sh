#!/bin/bash
# Session 10's cells, one after the other, in the order they ran (run.sh: one cell, 1 thread, nice 10).
cd "$(dirname "$0")/../../.."
bash bench/results/s10_cmi/run.sh resnet18_32 512 100 0      # the split: 2 rounds of 256 x 100 steps
bash bench/results/s10_cmi/run.sh vgg8_bn_32 512 100 0       # the split on VGG-8
bash bench/results/s10_cmi/run.sh resnet18_32 512 100 1      # the split, seed 1
bash bench/results/s10_cmi/run.sh resnet18_32 256 200 0 42   # the default's images, the split's KD steps
bash bench/results/s10_cmi/run.sh resnet18_32 256 200 1      # the default's plan (256 x 200), seed 1
bash bench/results/s10_cmi/run.sh mobilenetv2_32 1024 100 0  # the split on MobileNetV2 (if time)
