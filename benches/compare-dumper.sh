#!/usr/bin/env bash
# Side by side on loopback: the real Amanda 3.5.1 (amdump --no-taper + the real amandad under
# openbsd-inetd) against amanda-rs (dumper + our amandad, standalone), auth bsdtcp, GNUTAR,
# compress none, holding disks and data on tmpfs. Two data sets, each dumped alone (level 0):
#   big    one file of BIG_MIB MiB (default 2048) of random bytes
#   small  SMALL_FILES files of 4 KiB (default 100000), in directories of 1000
# For each: wall time of the whole run (estimates included), bytes/s over that, the dump
# rate each server reports for the DLE, the server's CPU seconds (user+sys of the run and
# its children; the client daemons are not counted) and its largest resident set (the
# biggest process of the run), then the ratios. The tar source
# alone (`tar -cf - | cat > /dev/null`) and loopback TCP are measured as references.
#
# Needs root, `scripts/setup` and the release binaries (cargo build --release --workspace
# --bins). Usage: sudo benches/compare-dumper.sh   (env: BIG_MIB, SMALL_FILES, ROOT, KEEP=1)
BENCH=compare-dumper
SMALL_FILES=${SMALL_FILES:-100000}
. "$(dirname "$0")/lib.sh"
need_tools

trap bench_cleanup EXIT

make_big_data
echo "== $SMALL_FILES small files in $ROOT/data/small"
mkdir -p "$ROOT/data/small"
python3 - "$ROOT/data/small" "$SMALL_FILES" <<'EOF'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
block = os.urandom(4096)
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%06d" % i), "wb") as f:
        f.write(block[i % 97:] + block[:i % 97])
EOF
big_bytes=$(du -sb "$ROOT/data/big" | cut -f1)
small_bytes=$(du -sb --apparent-size "$ROOT/data/small" | cut -f1)

# ---------------------------------------------------------------- references
ref_rate() { # dir -> MiB/s of tar alone
    local t0 t1
    t0=$(date +%s.%N); tar -cf - -C "$1" . | cat > /dev/null; t1=$(date +%s.%N)
    python3 -c "print(f'{$2/1048576/($t1-$t0):.0f}')"
}
echo "== references"
tar_big=$(ref_rate "$ROOT/data/big" "$big_bytes")
tar_small=$(ref_rate "$ROOT/data/small" "$small_bytes")
lo=$(python3 - <<'EOF'
import socket, threading, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
port = s.getsockname()[1]
N = 2 << 30
def sink():
    c, _ = s.accept(); n = 0
    while n < N:
        b = c.recv(1 << 20)
        if not b: break
        n += len(b)
t = threading.Thread(target=sink); t.start()
c = socket.create_connection(("127.0.0.1", port)); buf = b"x" * (1 << 20)
t0 = time.time()
for _ in range(N >> 20): c.sendall(buf)
c.close(); t.join()
print(f"{N/1048576/(time.time()-t0):.0f}")
EOF
)
echo "tar source alone: big $tar_big MiB/s, small $tar_small MiB/s; loopback TCP (python) $lo MiB/s"

# ---------------------------------------------------------------- clients
start_clients

# ---------------------------------------------------------------- configurations
CFG="rs-bench-$$"
mkdir -p "$ROOT/real"/{config,holding,state/curinfo,state/index,state/log,vtapes}
bench_conf "$ROOT/real" bsdtcp "$RPORT" "inparallel 2
tapecycle 20 tapes" > "$ROOT/real/config/amanda.conf"
printf 'localhost %s bench\nlocalhost %s bench\n' "$ROOT/data/big" "$ROOT/data/small" > "$ROOT/real/config/disklist"
touch "$ROOT/real/state/tapelist"
ln -sfn "$ROOT/real/config" "/etc/amanda/$CFG"

mkdir -p "$ROOT/ours"/{config,holding,state}
sed -e "s/client_port \"$RPORT\"/client_port \"$OPORT\"/" -e "s#$ROOT/real#$ROOT/ours#g" \
    "$ROOT/real/config/amanda.conf" > "$ROOT/ours/config/amanda.conf"
for set in big small; do
    mkdir -p "$ROOT/ours/config-$set"
    cp "$ROOT/ours/config/amanda.conf" "$ROOT/ours/config-$set/amanda.conf"
    printf 'localhost %s bench\n' "$ROOT/data/$set" > "$ROOT/ours/config-$set/disklist"
done
chown -R "$AMUSER:$AMUSER" "$ROOT/real" "$ROOT/ours"

# ---------------------------------------------------------------- runs
declare -A WALL CPU RATE RSS
for set in big small; do
    echo "== $set: real amdump (no taper) + real amandad"
    rm -rf "$ROOT/real/holding"/* "$ROOT/real/state/curinfo"/* "$ROOT/real/state/log"/*
    measure "real-$set" runuser -u "$AMUSER" -- /usr/sbin/amdump --no-taper "$CFG" localhost "$ROOT/data/$set"
    kps=$(cat "$ROOT/real/state/log"/log.* "$ROOT/real/state/log"/oldlog/log.* 2>/dev/null |
        sed -n 's/^SUCCESS dumper .*kps \([0-9.]*\).*/\1/p' | head -1 || true)
    [ -n "$kps" ] || { echo "real amdump failed:"; cat "$ROOT/out.real-$set"; grep -h "FAIL\|ERROR" "$ROOT/real/state/log"/* || true; exit 1; }
    RATE[real-$set]=$(python3 -c "print(f'{$kps/1024:.0f}')")
    rm -rf "$ROOT/real/holding"/*

    echo "== $set: dumper + our amandad"
    rm -rf "$ROOT/ours/holding"/* "$ROOT/ours/state"/*
    measure "ours-$set" "$BIN/dumper" run "$ROOT/ours/config-$set/amanda.conf" --progress plain
    kbs=$(awk '/DUMP SUMMARY:/{f=1;next} f && /OK$/{print $(NF-2); exit}' "$ROOT/out.ours-$set" || true)
    [ -n "$kbs" ] || { echo "dumper failed:"; cat "$ROOT/out.ours-$set"; exit 1; }
    RATE[ours-$set]=$(python3 -c "print(f'{$kbs/1024:.0f}')")
    rm -rf "$ROOT/ours/holding"/*
done

# ---------------------------------------------------------------- table
echo
printf '%-6s %-28s %8s %10s %12s %8s %10s %8s\n' set server "wall s" "MiB/s" "dump MiB/s" "CPU s" "CPU s/GiB" "RSS MiB"
for set in big small; do
    bytes=$big_bytes; [ $set = small ] && bytes=$small_bytes
    for who in real ours; do
        name="real amdump + real amandad"; [ $who = ours ] && name="dumper + our amandad"
        l="$who-$set"
        python3 -c "
w,c,b=${WALL[$l]},${CPU[$l]},$bytes
print(f'%-6s %-28s %8.2f %10.0f %12s %8.2f %10.2f %8s' % ('$set','$name',w,b/1048576/w,'${RATE[$l]}',c,c/(b/2**30),'${RSS[$l]}'))"
    done
    python3 -c "
rw,ow=${WALL[real-$set]},${WALL[ours-$set]}
rc,oc=${CPU[real-$set]},${CPU[ours-$set]}
rr,orr=${RATE[real-$set]},${RATE[ours-$set]}
print(f'{\"\":6} ratio ours/real: wall {ow/rw:.2f}x, dump rate {orr/max(rr,1):.2f}x, server CPU {oc/max(rc,0.01):.2f}x')"
done
echo "references: tar alone big $tar_big MiB/s, small $tar_small MiB/s; loopback TCP $lo MiB/s"
