#!/usr/bin/env bash
# Client compression, real against ours, in one run (issue 12): a copy of /usr/share on
# tmpfs, one DLE, amgtar, level 0, auth bsdtcp, the real amdump (--no-taper, holding disk on
# tmpfs) backing up
#   - the real amandad (Debian 3.5.1) under openbsd-inetd, and
#   - our amandad under openbsd-inetd (same launch, so the same accounting),
# with `compress none`, `compress client fast` and `compress client custom` + /usr/bin/zstd.
# Per row: the dump rate in original bytes (orig-kb / sec of the dumper's SUCCESS line), the
# output size (the DATA bytes, `kb`), and the client's CPU seconds for the dump alone: the
# inetd's reaped children (amandad, sendbackup, amgtar, tar, gzip/zstd, and our gzip
# threads) from just after the planner's FINISH line (the estimate's processes have exited)
# to the end; the estimate's CPU is shown apart.
# Then the ratios ours/real for `compress client fast`, the issue's targets: dump rate
# >= 3x, output <= 1.05x, client CPU <= 0.5x.
#
# Not a test: numbers vary with the machine's load (it is shared); the load average is
# printed. Needs root, scripts/setup and release binaries (cargo build --release -p amandad
# --bins). Usage: sudo benches/compare-codec.sh   (env: SRC=/usr/share, ROOT, KEEP=1,
# ONLY="ours-fast real-fast" for some rows)
BENCH=compare-codec
SRC=${SRC:-/usr/share}
. "$(dirname "$0")/lib.sh"
# (not lib.sh's need_tools: this bench needs no dumper)
[ "$(id -u)" = 0 ] || die "run as root (reserved ports, the Amanda user)"
for f in /usr/sbin/amdump /usr/lib/amanda/amandad /usr/sbin/inetd \
    /usr/bin/zstd "$BIN/amandad" "$BIN/amandad-runtar"; do
    [ -x "$f" ] || die "$f is missing (scripts/setup; cargo build --release -p amandad --bins)"
done

CFG="rs-codec-$$"
cleanup() {
    bench_cleanup
    rm -rf "/var/log/amanda/server/$CFG" "/var/log/amanda/client/$CFG"
}
trap cleanup EXIT

mkdir -p "$ROOT"/{data,conf,holding,state/curinfo,state/index,state/log,vtapes,inetd}
chmod 755 "$ROOT"
echo "== copying $SRC to $ROOT/data (tmpfs)"
cp -a "$SRC" "$ROOT/data/share"
DLE="$ROOT/data/share"
BYTES=$(du -sb --apparent-size "$DLE" | cut -f1)
FILES=$(find "$DLE" | wc -l)

# ---------------------------------------------------------------- clients, both under inetd
grep -qx 'localhost backup amdump' /etc/amandahosts || echo 'localhost backup amdump' >> /etc/amandahosts
cp "$BIN/amandad-runtar" "$ROOT/amandad-runtar"
chown "root:$AMUSER" "$ROOT/amandad-runtar"; chmod 4750 "$ROOT/amandad-runtar"
printf '[amandad]\nruntar_path = "%s"\n' "$ROOT/amandad-runtar" > "$ROOT/settings.toml"
chmod 644 "$ROOT/settings.toml"
declare -A PORT INETD
start_inetd() { # name line
    printf '%s\n' "$2" > "$ROOT/inetd/$1.conf"
    /usr/sbin/inetd -i -R 100000 "$ROOT/inetd/$1.conf" > "$ROOT/inetd/$1.log" 2>&1 < /dev/null &
    INETD[$1]=$!; pids+=($!)
}
PORT[real]=$(free_port)
start_inetd real "127.0.0.1:${PORT[real]} stream tcp nowait.1000 $AMUSER.$AMUSER /usr/lib/amanda/amandad amandad -auth=bsdtcp amdump"
PORT[ours]=$(free_port)
start_inetd ours "127.0.0.1:${PORT[ours]} stream tcp nowait.1000 $AMUSER.$AMUSER $BIN/amandad amandad -auth=bsdtcp amdump --log $ROOT/ours-amandad.log --settings $ROOT/settings.toml"
sleep 1

# CPU seconds of an inetd's reaped children (every client process that has exited).
children_cpu() {
    python3 -c "
import os
f=open('/proc/$1/stat').read().rsplit(')',1)[1].split()
print((int(f[13])+int(f[14]))/os.sysconf('SC_CLK_TCK'))"
}

# ---------------------------------------------------------------- configuration
# lib.sh's, with a dumptype per client and compression (its own `bench` is not used).
bench_conf "$ROOT" bsdtcp "${PORT[real]}" "inparallel 1
tapecycle 20 tapes" > "$ROOT/conf/amanda.conf"
cat >> "$ROOT/conf/amanda.conf" <<EOF
define application-tool app_amgtar {
    plugin "amgtar"
    property "ATIME-PRESERVE" "no"
}
EOF
for who in real ours; do
    for v in none fast zstd; do
        case $v in
            none) c='compress none' ;;
            fast) c='compress client fast' ;;
            zstd) c=$'compress client custom\n    client_custom_compress "/usr/bin/zstd"' ;;
        esac
        cat >> "$ROOT/conf/amanda.conf" <<EOF
define dumptype $who-$v {
    auth "bsdtcp"
    client_port "${PORT[$who]}"
    program "APPLICATION"
    application "app_amgtar"
    $c
    estimate client
    index no
    record no
    maxdumps 1
}
EOF
    done
done
touch "$ROOT/state/tapelist"
chown -R "$AMUSER:$AMUSER" "$ROOT/conf" "$ROOT/holding" "$ROOT/state" "$ROOT/vtapes"
ln -sfn "$ROOT/conf" "/etc/amanda/$CFG"

# ---------------------------------------------------------------- runs
declare -A RATE KB CPU WALL EST
run() { # who variant
    local who=$1 v=$2 l="$1-$2" c0 c1 c2 t0 t1 line watcher
    printf 'localhost %s %s\n' "$DLE" "$l" > "$ROOT/conf/disklist"
    rm -rf "$ROOT/holding"/* "$ROOT/state/curinfo"/* "$ROOT/state/log"/*
    sleep 1
    c0=$(children_cpu "${INETD[$who]}")
    # The estimate's processes are gone shortly after the planner finishes, and the dump's
    # REQ comes about a second later (the real server's bsdtcp pause): the client CPU from
    # then on is the dump's.
    rm -f "$ROOT/cpu-at-dump"
    ( while ! cat "$ROOT/state/log"/log.* 2>/dev/null | grep -q '^FINISH planner'; do sleep 0.05; done
      sleep 0.5
      children_cpu "${INETD[$who]}" > "$ROOT/cpu-at-dump" ) &
    watcher=$!
    t0=$(date +%s.%N)
    runuser -u "$AMUSER" -- /usr/sbin/amdump --no-taper "$CFG" > "$ROOT/out.$l" 2>&1 || true
    t1=$(date +%s.%N)
    sleep 1
    c2=$(children_cpu "${INETD[$who]}")
    kill "$watcher" 2>/dev/null || true
    c1=$(cat "$ROOT/cpu-at-dump" 2>/dev/null || echo "$c0")
    line=$(cat "$ROOT/state/log"/log.* "$ROOT/state/log"/oldlog/log.* 2>/dev/null | grep -m1 '^SUCCESS dumper' || true)
    [ -n "$line" ] || { echo "$l: amdump failed:"; cat "$ROOT/out.$l"; grep -h 'FAIL\|ERROR' "$ROOT/state/log"/* || true; exit 1; }
    read -r sec kb orig < <(sed -n 's/.*\[sec \([0-9.]*\) kb \([0-9]*\) kps [0-9.]* orig-kb \([0-9]*\).*/\1 \2 \3/p' <<< "$line")
    RATE[$l]=$(python3 -c "print(f'{$orig/1024/$sec:.1f}')")
    KB[$l]=$kb
    EST[$l]=$(python3 -c "print(f'{$c1-$c0:.2f}')")
    CPU[$l]=$(python3 -c "print(f'{$c2-$c1:.2f}')")
    WALL[$l]=$(python3 -c "print(f'{$t1-$t0:.1f}')")
    echo "$l: $line"
}
echo "== $BYTES bytes, $FILES files; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
for v in none fast zstd; do
    for who in real ours; do
        case " ${ONLY:-$who-$v} " in *" $who-$v "*) ;; *) continue ;; esac
        echo "== $who amandad, $v"
        run "$who" "$v"
    done
done
[ -n "${ONLY:-}" ] && { for l in $ONLY; do echo "$l: dump ${RATE[$l]} MiB/s, ${KB[$l]} KiB, client CPU ${CPU[$l]} s, estimate ${EST[$l]} s"; done; exit 0; }

# ---------------------------------------------------------------- table
echo
echo "compare-codec: $SRC copy on tmpfs ($BYTES bytes, $FILES files), amgtar level 0, bsdtcp; load now $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-22s %-12s %9s %14s %12s %12s %11s\n' compress client "amdump s" "dump MiB/s*" "output MB" "client CPU s" "estimate s"
for v in none fast zstd; do
    name="none"; [ $v = fast ] && name="client fast"; [ $v = zstd ] && name="client custom zstd"
    for who in real ours; do
        l="$who-$v"
        printf '%-22s %-12s %9s %14s %12s %12s %11s\n' "$name" "$who" "${WALL[$l]}" "${RATE[$l]}" \
            "$(python3 -c "print(f'{${KB[$l]}*1024/1e6:.1f}')")" "${CPU[$l]}" "${EST[$l]}"
    done
done
echo "* original bytes per second of the dump phase (orig-kb / sec of the dumper)"
python3 - "${RATE[real-fast]}" "${RATE[ours-fast]}" "${KB[real-fast]}" "${KB[ours-fast]}" "${CPU[real-fast]}" "${CPU[ours-fast]}" <<'EOF'
import sys
rr, orr, rk, ok, rc, oc = map(float, sys.argv[1:])
print(f"compress client fast, ours/real: dump rate {orr/rr:.2f}x (target >= 3), "
      f"output {ok/rk:.3f}x (target <= 1.05), client CPU {oc/max(rc,0.01):.2f}x (target <= 0.5)")
EOF
