#!/usr/bin/env bash
# The `filters` crate's in-process gzip against the gzip Amanda runs (`gzip --fast` for
# `compress ... fast`, `gzip --best` for best), on the corpus of issue 12: the tar stream of
# /usr/share (about 560 MiB on Debian 12), on tmpfs. Same run, same machine:
#   - each compressor alone on the tar file: wall, CPU seconds (user+sys, all threads),
#     output bytes, MB/s of original data, output relative to `gzip -1`;
#   - the client's pipeline `tar -cf - -C / usr/share | <compressor> > /dev/null`: wall,
#     CPU of tar + compressor, MB/s of original data (Amanda's `tar | gzip -1` is the
#     reference the issue's targets are relative to);
#   - zstd as Amanda runs a custom compressor (no argument), for reference;
#   - every output of ours is checked with the real `gzip -dc` (and with our gunzip).
# Best wall of RUNS runs (default 3) per row; the machine is shared, so single runs vary.
#
# Needs: cargo build --release -p amanda-benches --bin filters-gzip; gzip, tar, zstd.
# Usage: benches/compare-gzip.sh   (env: RUNS, ROOT, CORPUS=an existing tar file, KEEP=1,
#        BEST=0 to leave out the two `best` rows, which take about two minutes a run)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
ROOT=${ROOT:-/dev/shm/amanda-rs-gzip-bench-$$}
BIN=${BIN:-$PWD/target/release}
OURS="$BIN/filters-gzip"
die() { echo "compare-gzip: $*" >&2; exit 2; }
calc() { awk "BEGIN { print ($*) }"; }
[ -x "$OURS" ] || die "$OURS is missing (cargo build --release -p amanda-benches --bin filters-gzip)"
for t in gzip tar zstd; do command -v "$t" >/dev/null || die "$t is missing (scripts/setup)"; done

cleanup() { if [ "${KEEP:-0}" != 1 ]; then rm -rf "$ROOT"; else echo "kept $ROOT"; fi; }
trap cleanup EXIT
mkdir -p "$ROOT"
if [ -n "${CORPUS:-}" ]; then
    ln -s "$(readlink -f "$CORPUS")" "$ROOT/corpus.tar"
else
    echo "== corpus: tar -cf - -C / usr/share > $ROOT/corpus.tar"
    tar -cf - -C / usr/share > "$ROOT/corpus.tar" 2>/dev/null || true
fi
SIZE=$(stat -L -c %s "$ROOT/corpus.tar")
echo "== corpus: $SIZE bytes; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"

# measure NAME OUTFILE CMD: best wall of RUNS runs of `bash -c CMD`; sets W (wall s),
# CPU (user+sys s of that run, children included), O (bytes of OUTFILE, 0 for /dev/null).
measure() {
    local name=$1 outfile=$2 cmd=$3 i t0 t1 best_w='' best_c=''
    for ((i = 0; i < RUNS; i++)); do
        local before after
        before=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
        t0=$(date +%s.%N)
        bash -c "$cmd"
        t1=$(date +%s.%N)
        # Children's CPU in clock ticks, from our own /proc stat (cutime + cstime).
        after=$(awk '{print $14+$15+$16+$17}' /proc/$$/stat)
        local w c
        w=$(calc "$t1 - $t0")
        c=$(calc "($after - $before) / $(getconf CLK_TCK)")
        if [ -z "$best_w" ] || [ "$(calc "$w < $best_w")" = 1 ]; then best_w=$w; best_c=$c; fi
    done
    W=$best_w; CPU=$best_c
    O=0; [ "$outfile" != /dev/null ] && O=$(stat -c %s "$outfile")
    ROWS+=("$name;$W;$CPU;$O")
}

ROWS=()
C=$ROOT/corpus.tar
measure "gzip -1 (Amanda's fast)"      "$ROOT/g1.gz"   "gzip -1 -c < $C > $ROOT/g1.gz"
measure "ours fast, 1 thread"           "$ROOT/o1.gz"   "$OURS --threads 1 < $C > $ROOT/o1.gz 2>/dev/null"
measure "ours fast, 2 threads (default)" "$ROOT/o2.gz"  "$OURS --threads 2 < $C > $ROOT/o2.gz 2>/dev/null"
if [ "${BEST:-1}" = 1 ]; then
    measure "gzip -9 (Amanda's best)"  "$ROOT/g9.gz"   "gzip -9 -c < $C > $ROOT/g9.gz"
    measure "ours best, 2 threads"      "$ROOT/ob.gz"   "$OURS --threads 2 --level best < $C > $ROOT/ob.gz 2>/dev/null"
fi
measure "zstd (custom, no argument)"    "$ROOT/z.zst"   "zstd -q -c < $C > $ROOT/z.zst"
PIPE_START=${#ROWS[@]}
measure "tar | gzip -1"                 /dev/null       "tar -cf - -C / usr/share 2>/dev/null | gzip -1 > /dev/null"
measure "tar | ours fast (2 threads)"   /dev/null       "tar -cf - -C / usr/share 2>/dev/null | $OURS --threads 2 > /dev/null 2>&1"
measure "tar | zstd"                    /dev/null       "tar -cf - -C / usr/share 2>/dev/null | zstd -q -c > /dev/null"

echo "== checks: every output of ours through the real gzip -dc and our gunzip"
for f in o1 o2 $([ "${BEST:-1}" = 1 ] && echo ob); do
    gzip -dc < "$ROOT/$f.gz" | cmp -s - "$C" || die "gzip -dc of $f.gz differs from the corpus"
    "$OURS" -d < "$ROOT/$f.gz" 2>/dev/null | cmp -s - "$C" || die "our gunzip of $f.gz differs"
done
"$OURS" -d < "$ROOT/g1.gz" 2>/dev/null | cmp -s - "$C" || die "our gunzip of gzip -1's output differs"
echo "   ok"

echo
printf '%-32s %8s %8s %13s %9s %9s\n' "compressor (alone, from tmpfs)" "wall s" "CPU s" "output bytes" "vs gz -1" "MB/s"
G1=$(echo "${ROWS[0]}" | cut -d';' -f4)
for ((i = 0; i < ${#ROWS[@]}; i++)); do
    IFS=';' read -r n w c o <<< "${ROWS[$i]}"
    if [ "$i" = "$PIPE_START" ]; then
        echo
        printf '%-32s %8s %8s %13s %9s %9s\n' "client pipeline (tar reads /usr/share)" "wall s" "CPU s" "" "" "MB/s"
    fi
    rate=$(calc "$SIZE / $w / 1000000")
    if [ "$o" != 0 ]; then
        printf '%-32s %8.2f %8.2f %13d %9.3f %9.0f\n' "$n" "$w" "$c" "$o" "$(calc "$o / $G1")" "$rate"
    else
        printf '%-32s %8.2f %8.2f %13s %9s %9.0f\n' "$n" "$w" "$c" "" "" "$rate"
    fi
done
IFS=';' read -r _ w1 c1 o1 <<< "${ROWS[0]}"
IFS=';' read -r _ w2 c2 o2 <<< "${ROWS[2]}"
IFS=';' read -r _ pw1 pc1 _ <<< "${ROWS[$PIPE_START]}"
IFS=';' read -r _ pw2 pc2 _ <<< "${ROWS[$((PIPE_START + 1))]}"
echo
printf 'ratio ours fast / gzip -1: output %.3fx, compressor CPU %.2fx, compressor rate %.2fx; pipeline CPU %.2fx, pipeline rate %.2fx\n' \
    "$(calc "$o2 / $o1")" "$(calc "$c2 / $c1")" "$(calc "$w1 / $w2")" \
    "$(calc "$pc2 / $pc1")" "$(calc "$pw1 / $pw2")"
