#!/bin/bash
# s13 screens (replay of earlier generated images, mixup): bench/job_queue.sh
exec bash "$(dirname "$0")/../../job_queue.sh" "$(dirname "$0")" ablation
