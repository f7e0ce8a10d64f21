#!/bin/bash
# s13 runs through the real command (datafree compress): bench/job_queue.sh
exec bash "$(dirname "$0")/../../job_queue.sh" "$(dirname "$0")" compress
