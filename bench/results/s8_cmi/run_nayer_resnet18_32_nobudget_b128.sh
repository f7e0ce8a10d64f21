#!/bin/bash
# nayer x resnet18_32 with every default and the budget off (RUN_BUDGET_CPU_S patched to 1e9): the KD
# batch of 128 that the session-7 price kept, on today's teacher, against the new plan's batch 64.
cd "$(dirname "$0")/../../.."  # the repository root
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH=. DATAFREE_SUITE=${DATAFREE_SUITE:-$HOME/.cache/datafree/suite}
nice -n 10 ${PYTHON:-python} -c "
import sys
from unittest import mock
import datafree.rules
with mock.patch.object(datafree.rules, 'RUN_BUDGET_CPU_S', 1e9):
    from bench.fidelity import main
    sys.exit(main(['--teachers', 'resnet18_32', '--methods', 'nayer', '--no-baseline',
                   '--threads', '1', '--seed', '0', '--out', 'bench/results/s8_cmi', '--tag', 'nayer_resnet18_32_nobudget_b128']))
" > bench/results/s8_cmi/fidelity_nayer_resnet18_32_nobudget_b128.log 2>&1
