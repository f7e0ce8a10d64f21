# A/B: session 9 code (5df8a1c) against HEAD, the same cmi run on mobilenetv2_32, alternated, one thread each, sequential.
cd /work/main
[ -d /tmp/wt_s9 ] || git worktree add -f /tmp/wt_s9 5df8a1c -q
OUT=/work/notes/ab; mkdir -p $OUT
ARGS="compress --teacher /work/cache/suite/mobilenetv2_32/model.json --method cmi -n 256 --epochs 10 --set iterations=50 --seed 0 --threads 1 --no-baseline -q"
for i in 1 2; do
  for code in s9 head; do
    if [ $code = s9 ]; then dir=/tmp/wt_s9; else dir=/work/main; fi
    rm -rf /tmp/ab/${code}_$i
    (cd $dir && /usr/bin/time -f "%e s wall %U s user %S s sys" -o $OUT/${code}_$i.time env PYTHONPATH=$dir OMP_WAIT_POLICY=PASSIVE \
      /work/main/.venv/bin/python cli.py $ARGS --out /tmp/ab/${code}_$i > $OUT/${code}_$i.log 2>&1)
    cp /tmp/ab/${code}_$i/report.json $OUT/${code}_$i.report.json
    echo "$code $i $(cat $OUT/${code}_$i.time) $(grep -o 'accuracy [0-9.]*' $OUT/${code}_$i.log | head -1)"
  done
done
