#!/usr/bin/env bash
# The night end to end, with the taper, side by side on loopback (issue 15): the real
# Amanda 3.5.1 (amdump with its taper + the real amandad under openbsd-inetd) against
# amanda-rs (dumper with its taper + our amandad, standalone), auth bsdtcp, GNUTAR, compress
# none, one DLE of one BIG_MIB MiB file (default 2048) of random bytes, level 0. Data,
# holding disks and chg-disk vtapes are all on tmpfs; both servers start taping as soon as
# a dump is on the holding disk (flush thresholds 0, taperflush 0) and the run ends when
# the dump is on a vtape and its holding file is gone.
#
# dumper runs twice: with its vtapes on the holding disk's file system (the taper then links
# each holding file into the volume and rewrites its header, instead of copying it), and
# with its vtapes on a second tmpfs mounted for the purpose (the taper copies, with
# copy_file_range).
#
# For each: wall time of the whole run (estimate, dump to holding, holding to vtape), MiB/s
# over that, the server's CPU seconds (user+sys of the run and its children; the client
# daemons are not counted) and its largest resident set, then the ratios. Each run is
# checked: the real one's log has `DONE taper`, ours says `TAPER: 1 dump(s) written`.
#
# Needs root, `scripts/setup` and the release binaries (cargo build --release --workspace
# --bins), and about 3 x BIG_MIB MiB free on /dev/shm. Usage: sudo benches/compare-taper.sh
# (env: BIG_MIB, RUNS (default 1: runs per server; the best wall time counts), ROOT, KEEP=1)
BENCH=compare-taper
RUNS=${RUNS:-1}
. "$(dirname "$0")/lib.sh"
need_tools

cleanup() {
    stop_pids
    if mountpoint -q "$ROOT/copy-vtapes" 2>/dev/null; then umount "$ROOT/copy-vtapes"; fi
    bench_cleanup
}
trap cleanup EXIT

make_big_data
bytes=$(du -sb "$ROOT/data/big" | cut -f1)

# ---------------------------------------------------------------- clients
start_clients

# ---------------------------------------------------------------- configurations
CFG="rs-tbench-$$"
conf() { # dir port -> amanda.conf of that side
    bench_conf "$1" bsdtcp "$2" "inparallel 2
tapecycle 2 tapes
runtapes 1
flush-threshold-dumped 0
flush-threshold-scheduled 0
taperflush 0
autolabel \"$CFG-%%\" any"
}
mkdir -p "$ROOT/copy-vtapes"
mount -t tmpfs -o size=$((BIG_MIB + 256))m tmpfs "$ROOT/copy-vtapes"
for who in real ours copy; do
    mkdir -p "$ROOT/$who"/{config,holding,state/curinfo,state/index,state/log,vtapes}
    port=$RPORT; [ $who != real ] && port=$OPORT
    conf "$ROOT/$who" "$port" > "$ROOT/$who/config/amanda.conf"
    printf 'localhost %s bench\n' "$ROOT/data/big" > "$ROOT/$who/config/disklist"
    touch "$ROOT/$who/state/tapelist"
done
sed -i "s#chg-disk:$ROOT/copy/vtapes#chg-disk:$ROOT/copy-vtapes#" "$ROOT/copy/config/amanda.conf"
chown -R "$AMUSER:$AMUSER" "$ROOT/real" "$ROOT/ours" "$ROOT/copy" "$ROOT/copy-vtapes"
ln -sfn "$ROOT/real/config" "/etc/amanda/$CFG"

# ---------------------------------------------------------------- runs
declare -A WALL CPU RSS
reset() { # side: empty holding, vtapes and catalog
    rm -rf "$ROOT/$1/holding"/* "$ROOT/$1/vtapes"/* "$ROOT/$1/state"/* "$ROOT/copy-vtapes"/*
    mkdir -p "$ROOT/$1"/state/{curinfo,index,log}
    touch "$ROOT/$1/state/tapelist"
    chown -R "$AMUSER:$AMUSER" "$ROOT/$1"
}
for i in $(seq 1 "$RUNS"); do
    echo "== run $i: real amdump (with its taper) + real amandad"
    reset real
    measure real runuser -u "$AMUSER" -- /usr/sbin/amdump "$CFG"
    grep -q '^DONE taper' "$ROOT/real/state/log"/log.* ||
        { echo "real amdump did not tape:"; cat "$ROOT/out.real"; grep -h "FAIL\|ERROR" "$ROOT/real/state/log"/* || true; exit 1; }
    echo "== run $i: dumper (with its taper) + our amandad"
    reset ours
    measure ours "$BIN/dumper" run "$ROOT/ours/config/amanda.conf" --progress plain
    grep -q 'TAPER: 1 dump(s) written' "$ROOT/out.ours" || { echo "dumper did not tape:"; cat "$ROOT/out.ours"; exit 1; }
    [ -z "$(find "$ROOT/ours/holding" -type f)" ] || { echo "dumper left a holding file"; exit 1; }
    reset ours
    echo "== run $i: dumper (with its taper, vtapes on another file system) + our amandad"
    reset copy
    measure copy "$BIN/dumper" run "$ROOT/copy/config/amanda.conf" --progress plain
    grep -q 'TAPER: 1 dump(s) written' "$ROOT/out.copy" || { echo "dumper did not tape:"; cat "$ROOT/out.copy"; exit 1; }
    reset copy
done

# ---------------------------------------------------------------- table
echo
printf '%-44s %8s %10s %8s %10s %8s\n' "server ($BIG_MIB MiB level 0, holding + taper)" "wall s" "MiB/s" "CPU s" "CPU s/GiB" "RSS MiB"
for who in real ours copy; do
    name="real amdump + taper + real amandad"
    [ $who = ours ] && name="dumper + taper (linked) + our amandad"
    [ $who = copy ] && name="dumper + taper (copied) + our amandad"
    python3 -c "
w,c,b=${WALL[$who]},${CPU[$who]},$bytes
print(f'%-44s %8.2f %10.0f %8.2f %10.2f %8s' % ('$name',w,b/1048576/w,c,c/(b/2**30),'${RSS[$who]}'))"
done
python3 -c "
rw,ow,cw=${WALL[real]},${WALL[ours]},${WALL[copy]}
rc,oc,cc=${CPU[real]},${CPU[ours]},${CPU[copy]}
print(f'ratio real/ours: end to end {rw/ow:.2f}x faster (linked), {rw/cw:.2f}x (copied); server CPU {oc/max(rc,0.01):.2f}x / {cc/max(rc,0.01):.2f}x of the real one')"
