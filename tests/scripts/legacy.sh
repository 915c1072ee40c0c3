#!/bin/sh
# A legacy script: many `ssh host cmd` calls, in a loop and in the background.
# Usage: legacy.sh HOST LOOPS CONCURRENT OUTDIR   (ssh options come from $SSH_OPTS)
set -eu
host=$1 loops=$2 concurrent=$3 out=$4
i=0
while [ "$i" -lt "$loops" ]; do
    i=$((i + 1))
    got=$(ssh $SSH_OPTS "$host" "echo $i")
    [ "$got" = "$i" ] || { echo "call $i said '$got'" >&2; exit 1; }
done
i=0
while [ "$i" -lt "$concurrent" ]; do
    i=$((i + 1))
    ssh $SSH_OPTS "$host" "echo bg-$i; echo err-$i >&2" >"$out/bg-$i" 2>"$out/err-$i" &
done
wait
i=0
while [ "$i" -lt "$concurrent" ]; do
    i=$((i + 1))
    [ "$(cat "$out/bg-$i")" = "bg-$i" ] && [ "$(cat "$out/err-$i")" = "err-$i" ] || {
        echo "background call $i went wrong" >&2
        exit 1
    }
done
echo all-good
