# Shared by the compare-*.sh scripts (sourced first, not run): strict mode, the repository's
# root as the working directory, the defaults of ROOT and BIG_MIB, the checks, a free port, the
# cleanup, the two bsdtcp clients side by side on loopback and the amanda.conf. The caller sets
# BENCH (its name) before sourcing, and CFG (its configuration, once known) after; ROOT is its
# scratch directory (real/ and ours/ are made when it starts the clients here); it adds what
# cleanup kills to the array pids.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=${ROOT:-/dev/shm/amanda-rs-$BENCH-$$}
BIG_MIB=${BIG_MIB:-2048}

BIN=${BIN:-$PWD/target/release}  # the release binaries
AMUSER=backup
pids=()

die() { echo "$BENCH: $*" >&2; exit 2; }

# Root, the real Amanda and our release binaries.
need_tools() {
    [ "$(id -u)" = 0 ] || die "run as root (reserved ports, the Amanda user)"
    local f
    for f in /usr/sbin/amdump /usr/lib/amanda/amandad /usr/sbin/inetd "$BIN/dumper" "$BIN/amandad" "$BIN/amandad-runtar"; do
        [ -x "$f" ] || die "$f is missing (scripts/setup; cargo build --release --workspace --bins)"
    done
}

# Kills the processes in pids (each one's process group when it leads one).
stop_pids() {
    local p
    for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null || true; done
    pids=()
}

# The EXIT trap's common part: stop_pids, unlink /etc/amanda/$CFG, remove ROOT (unless KEEP=1).
bench_cleanup() {
    stop_pids
    if [ -n "${CFG:-}" ]; then rm -f "/etc/amanda/$CFG"; fi
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$ROOT"; else echo "kept $ROOT"; fi
}

# ROOT (world-readable, with real/ and ours/) and data/big/big.bin: BIG_MIB MiB of random
# bytes, which no codec shrinks.
make_big_data() {
    mkdir -p "$ROOT"/{data/big,real,ours}
    chmod 755 "$ROOT"
    echo "== $BIG_MIB MiB of random data in $ROOT/data/big (tmpfs)"
    head -c $((BIG_MIB * 1024 * 1024)) /dev/urandom > "$ROOT/data/big/big.bin"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The real amandad under openbsd-inetd on RPORT, ours standalone on OPORT (both set here).
start_clients() {
    grep -q '^localhost backup amdump' /etc/amandahosts || echo 'localhost backup amdump' >> /etc/amandahosts
    RPORT=$(free_port)
    mkdir -p "$ROOT/real/inetd"
    printf '127.0.0.1:%s\tstream\ttcp\tnowait.1000\t%s.%s\t/usr/lib/amanda/amandad\tamandad -auth=bsdtcp amdump\n' \
        "$RPORT" "$AMUSER" "$AMUSER" > "$ROOT/real/inetd/inetd.conf"
    /usr/sbin/inetd -i -R 100000 "$ROOT/real/inetd/inetd.conf" > "$ROOT/real/inetd/log" 2>&1 < /dev/null &
    pids+=($!)
    OPORT=$(free_port)
    chown "root:$AMUSER" "$BIN/amandad-runtar"; chmod 4750 "$BIN/amandad-runtar"
    "$BIN/amandad" -auth=bsdtcp amdump --log "$ROOT/ours/amandad.log" --listen "tcp:127.0.0.1:$OPORT" < /dev/null > /dev/null 2>&1 &
    pids+=($!)
    sleep 1
}

# measure LABEL CMD...: runs CMD under /usr/bin/time, output in $ROOT/out.LABEL; keeps in the
# caller's associative arrays WALL, CPU (user+sys, children included) and RSS (MiB) the
# numbers of the fastest run of LABEL so far.
measure() {
    local label=$1; shift
    /usr/bin/time -f "%e %U %S %M" -o "$ROOT/time.$label" "$@" > "$ROOT/out.$label" 2>&1 || true
    # /usr/bin/time prepends "Command exited with non-zero status N" when it is not 0.
    read -r w u s m < <(grep -v '^Command' "$ROOT/time.$label" | tail -1)
    if [ -z "${WALL[$label]:-}" ] || python3 -c "import sys; sys.exit(0 if $w < ${WALL[$label]} else 1)"; then
        WALL[$label]=$w
        RSS[$label]=$((m / 1024))
        CPU[$label]=$(python3 -c "print(f'{$u+$s:.2f}')")
    fi
}

# bench_conf DIR AUTH PORT GLOBALS [DUMPTYPE]: the amanda.conf of one side, both servers
# read it: chg-disk vtapes, holding disk and state under DIR, and the dumptype `bench`
# (GNUTAR, no compression, client estimates) of AUTH on client PORT. GLOBALS (inparallel,
# tapecycle, ...) and DUMPTYPE are the script's own lines. Uses CFG and AMUSER.
bench_conf() {
    cat <<EOC
org "$CFG"
mailto ""
dumpuser "$AMUSER"
netusage 10000000 Kbps
dumpcycle 0
runspercycle 1
etimeout 1200
dtimeout 1800
ctimeout 30
autoflush no
reserve 0
$4
define changer vtl {
    tpchanger "chg-disk:$1/vtapes"
    property "num-slot" "4"
    property "auto-create-slot" "yes"
}
tpchanger "vtl"
tapetype "HARDDISK"
labelstr "^$CFG-[0-9][0-9]*\$"
tapelist "$1/state/tapelist"
infofile "$1/state/curinfo"
logdir "$1/state/log"
indexdir "$1/state/index"
define tapetype HARDDISK {
    length 100000 mbytes
}
define holdingdisk hd1 {
    directory "$1/holding"
    use 16000 mbytes
    chunksize 0
}
holdingdisk "hd1"
define dumptype bench {
    auth "$2"
    client_port "$3"
    program "GNUTAR"
    compress none
    estimate client
    index yes
    record no
    maxdumps 1
${5:-}
}
EOC
}
