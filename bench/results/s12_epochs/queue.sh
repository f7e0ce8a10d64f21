#!/bin/bash
# s12 screens (online KD epochs x2 on lenet5_digits; the generator width on mobilenetv2_32): bench/job_queue.sh
exec bash "$(dirname "$0")/../../job_queue.sh" "$(dirname "$0")" ablation
