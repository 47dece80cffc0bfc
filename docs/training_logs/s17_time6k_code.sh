#!/bin/bash
# usage: time6k_code.sh ROUNDS DIR:WEIGHTS ...  6K decode (v3.3's thumbnail of a 6028x3391 photo), fresh CLI processes,
# each entry runs the package in DIR (a worktree) with WEIGHTS; alternating, one untimed round first.
t=/work/main/build/versus/thumbnail.jpg
rounds=$1; shift
for r in $(seq 0 $rounds); do
  for e in "$@"; do
    d=${e%%:*}; w=${e#*:}
    s=$(date +%s%N); (cd $d && /work/main/.venv/bin/python -m hyperthumbnail decode $t -o /tmp/out6k.png --weights $w --threads 1 >/dev/null 2>&1); x=$(date +%s%N)
    [ $r -gt 0 ] && echo "$e $(( (x - s) / 1000000 ))"
  done
done
