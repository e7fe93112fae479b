#!/usr/bin/env bash
# Side-by-side measurements of the real Debian amandad (under openbsd-inetd, as deployed)
# and amanda-rs's amandad (standalone and under inetd), in one run on this machine:
#   - noop exchanges/s at concurrency 16 and median latency at concurrency 1, bsd and bsdtcp
#     (bsdtcp: a new connection per exchange, as the real server does);
#   - RSS of our amandad with 1,000 exchanges in flight;
#   - sendbackup of a 2 GiB file (amgtar, level 0, bsdtcp) against `tar -cf - DIR | cat`,
#     with the client's CPU seconds per GiB (amandad + tar and, for the real one, sendbackup
#     and amgtar).
# Needs root (reserved source ports) and scripts/setup. Usage: benches/compare-amandad.sh
# [SECONDS_PER_RUN] (default 5). Set SKIP_SENDBACKUP=1 to skip the 2 GiB part.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
[ "$(id -u)" = 0 ] || { echo "run as root (reserved ports)" >&2; exit 2; }

cargo build -q --release -p amandad -p amanda-benches --bins
T=$(cd "${CARGO_TARGET_DIR:-target}/release" && pwd)
LOAD="$T/amanda-load"
chown root:backup "$T/amandad-runtar" && chmod 4750 "$T/amandad-runtar"
grep -qx 'localhost backup amdump' /etc/amandahosts || echo 'localhost backup amdump' >> /etc/amandahosts

WORK=$(mktemp -d /tmp/amanda-rs-compare.XXXXXX); chmod 755 "$WORK"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
inetd() {  # inetd NAME LINE
    printf '%s\n' "$2" > "$WORK/$1.conf"
    setsid /usr/sbin/inetd -i -R 1000000 "$WORK/$1.conf" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!); sleep 0.5
}
RU=$(free_port); RT=$(free_port); OU=$(free_port); OT=$(free_port); IU=$(free_port)
inetd real-udp "127.0.0.1:$RU dgram udp wait backup.backup /usr/lib/amanda/amandad amandad -auth=bsd amdump"
inetd real-tcp "127.0.0.1:$RT stream tcp nowait.100000 backup.backup /usr/lib/amanda/amandad amandad -auth=bsdtcp amdump"
inetd ours-udp "127.0.0.1:$IU dgram udp wait backup.backup $T/amandad amandad -auth=bsd amdump --log $WORK/ours-inetd.log"
setsid "$T/amandad" -auth=bsd amdump --log "$WORK/ours.log" --listen "udp:127.0.0.1:$OU" --listen "tcp:127.0.0.1:$OT" </dev/null >/dev/null 2>&1 &
OURS=$!; PIDS+=($OURS); sleep 0.5
export AMANDA_RS_LOG=warn

run() { "$LOAD" noop --auth "$1" --port "$2" --concurrency "$3" --seconds "$SECS" | tee -a "$WORK/results"; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1fx", a / b; else print "n/a" }'; }
if [ "${SKIP_NOOP:-0}" != 1 ]; then
echo "== noop exchanges (each run ${SECS}s)"
# The real amandad under `dgram wait` keeps the socket until it exits idle; a run that starts
# in that window goes unanswered, so each real bsd run starts once it has gone.
settle_real() {
    local p; p=$(pgrep -f "inetd -i -R 1000000 $WORK/real-udp.conf" | head -1)
    for _ in $(seq 120); do pgrep -P "$p" >/dev/null || return 0; sleep 0.5; done
}
# row LABEL AUTH PORT CONCURRENCY: one run, printed; last FIELD: that field of the last run.
row() { printf '%-28s %s\n' "$1" "$(run "$2" "$3" "$4")"; }
last() { tail -1 "$WORK/results" | field "$1"; }
settle_real
row "real amandad, bsd, c=1" bsd "$RU" 1; R_LAT=$(last median)
row "ours, bsd, c=1" bsd "$OU" 1; O_LAT=$(last median)
row "real amandad, bsdtcp, c=1" bsdtcp "$RT" 1
row "ours, bsdtcp, c=1" bsdtcp "$OT" 1; O_TLAT=$(last median)
settle_real
row "real amandad, inetd, bsd" bsd "$RU" 16; R_BSD=$(last rate)
row "ours, standalone, bsd" bsd "$OU" 16; O_BSD=$(last rate)
row "ours, inetd, bsd" bsd "$IU" 16; I_BSD=$(last rate)
row "real amandad, inetd, bsdtcp" bsdtcp "$RT" 16; R_TCP=$(last rate)
row "ours, standalone, bsdtcp" bsdtcp "$OT" 16; O_TCP=$(last rate)
echo "ratio bsd (standalone / real):    $(ratio "$O_BSD" "$R_BSD")   (under inetd: $(ratio "$I_BSD" "$R_BSD"))   target >= 50x"
echo "ratio bsdtcp (standalone / real): $(ratio "$O_TCP" "$R_TCP")   target >= 50x"
echo "median latency c=1: bsd ${O_LAT} ms, bsdtcp ${O_TLAT} ms (real bsd ${R_LAT} ms)   target < 1 ms"

echo "== memory with 1,000 exchanges in flight"
"$LOAD" hold --port "$OU" --count 1000 --seconds 3 &
HOLD=$!; sleep 2
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$OURS/status"); wait $HOLD
echo "our amandad RSS: $((RSS / 1024)) MiB ($RSS KiB)   target < 32 MiB"
fi

[ "${SKIP_SENDBACKUP:-0}" = 1 ] && exit 0
echo "== sendbackup of a 2 GiB file (tmpfs), amgtar level 0, bsdtcp"
D=/dev/shm/amanda-rs-compare-data; mkdir -p "$D"; chmod 755 "$D"
[ -s "$D/big.bin" ] || head -c 2G /dev/urandom > "$D/big.bin"
cpu_of() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }   # utime stime cutime cstime (ticks)
HZ=$(getconf CLK_TCK)
t0=$(date +%s.%N); tar -cf - -C "$D" . | cat > /dev/null; t1=$(date +%s.%N)
TAR_RATE=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", 2048 / (b - a) }')
echo "tar -cf - | cat:               ${TAR_RATE} MiB/s"
c0=$(cpu_of "$OURS"); out=$("$LOAD" sendbackup --auth bsdtcp --port "$OT" --dir "$D"); c1=$(cpu_of "$OURS")
O_RATE=$(echo "$out" | field rate)
O_CPU=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz / 2 }')
echo "ours (standalone):             $out  client CPU ${O_CPU} s/GiB"
RPID=$(pgrep -f "inetd -i -R 1000000 $WORK/real-tcp.conf" | head -1)
c0=$(cpu_of "$RPID"); out=$("$LOAD" sendbackup --auth bsdtcp --port "$RT" --dir "$D"); sleep 1; c1=$(cpu_of "$RPID")
R_RATE=$(echo "$out" | field rate)
R_CPU=$(awk -v a="$c0" -v b="$c1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz / 2 }')
echo "real amandad (inetd):          $out  client CPU ${R_CPU} s/GiB"
echo "ours / tar|cat rate: $(awk -v a="$O_RATE" -v b="$TAR_RATE" 'BEGIN { printf "%.0f%%", 100 * a / b }')   target >= 90%"
echo "ours / real rate:    $(ratio "$O_RATE" "$R_RATE");  CPU per GiB ours ${O_CPU} s vs real ${R_CPU} s   target: not more"
