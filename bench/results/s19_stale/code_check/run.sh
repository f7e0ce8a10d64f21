# Session 9 code (commit 5df8a1c, which measured mbv2 cmi 96.4% on the suite as retrained in session 8) on the
# current suite: `git worktree add /tmp/wt_s9 5df8a1c`, then this script (the current venv, PYTHONPATH at the worktree).
cd /tmp/wt_s9
while [ ! -f /work/cache/suite/mobilenetv2_32/model.json ]; do sleep 10; done
sleep 5
/usr/bin/time -f "%e s wall %U s user %S s sys" -o /work/notes/s9check/mbv2_cmi_s0_s9code.time env PYTHONPATH=/tmp/wt_s9 OMP_WAIT_POLICY=PASSIVE nice -n 10 \
  /work/main/.venv/bin/python cli.py compress --teacher /work/cache/suite/mobilenetv2_32/model.json --method cmi --seed 0 \
  --threads 1 --no-baseline -q --out /tmp/s9check/mbv2_cmi > /work/notes/s9check/mbv2_cmi_s0_s9code.log 2>&1
cp /tmp/s9check/mbv2_cmi/report.json /work/notes/s9check/mbv2_cmi_s0_s9code.report.json
