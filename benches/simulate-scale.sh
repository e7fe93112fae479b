#!/usr/bin/env bash
# How `portpool --simulate` scales with the site: wall time, CPU and peak RSS of whole runs
# (every policy and the range search, as an admin runs it) for growing DLE counts and
# inparallel, and the target of issue 11: 100,000 DLEs at inparallel 200 on 850-859 in
# under 2 s with under 200 MiB. That the faster simulator prints the same nights as before
# is a unit test (portpool: sim::tests::faster_simulation_prints_the_recorded_nights).
#
# Usage: benches/simulate-scale.sh   (env: BIN=target/release; builds portpool if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-$PWD/target/release}
[ -x "$BIN/portpool" ] || cargo build -q --release -p portpool
/usr/bin/time -V >/dev/null 2>&1 || { echo "simulate-scale: needs GNU time (apt-get install time)" >&2; exit 2; }

printf '%-8s %-10s %9s %9s %10s\n' dles inparallel wall_s cpu_s rss_mib
verdict=PASS
for case in "10000 200" "30000 200" "100000 200" "30000 1000"; do
    set -- $case
    out=$( { /usr/bin/time -f '%e %U %S %M' "$BIN/portpool" --simulate --range 850-859 \
        --inparallel "$2" --dles "$1" >/dev/null; } 2>&1 | tail -1)
    read -r wall user sys rss <<<"$out"
    cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
    printf '%-8s %-10s %9s %9s %10d\n' "$1" "$2" "$wall" "$cpu" $((rss / 1024))
    if [ "$case" = "100000 200" ]; then
        awk -v w="$wall" 'BEGIN { exit !(w >= 2) }' && verdict=FAIL
        (( rss / 1024 >= 200 )) && verdict=FAIL
    fi
done
echo "target (100000 DLEs, inparallel 200: under 2 s, under 200 MiB): $verdict"
