#!/usr/bin/env bash
# auth ssl throughput on loopback (issue 13): one file of BIG_MIB MiB (default 2048) of random
# bytes, level 0, GNUTAR, compress none, data and holding disk on tmpfs, three ways:
#   dumper + our amandad, bsdtcp        (the reference: what TLS costs us)
#   dumper + our amandad, ssl           (target: at least 0.8x the bsdtcp rate)
#   real amdump --no-taper + real amandad, ssl (Amanda 3.5.1 with OpenSSL 3)
# The certificates are made by the real amssl (tests/fixtures/ssl/amssl-trees.sh). For each
# run: wall time (estimates included), MiB/s over it, the dump rate the server reports, the
# server's CPU seconds and largest RSS, the best of ROUNDS runs each (default 3: the machine
# may be shared); then the ratios. Not a timed test: a script.
#
# Needs root, `scripts/setup` and the release binaries (cargo build --release --workspace
# --bins). Usage: sudo benches/compare-ssl.sh   (env: BIG_MIB, ROUNDS, ROOT, KEEP=1)
BENCH=compare-ssl
ROUNDS=${ROUNDS:-3}
. "$(dirname "$0")/lib.sh"
need_tools
command -v amssl > /dev/null || die "amssl is missing (scripts/setup)"

trap bench_cleanup EXIT

make_big_data
bytes=$(du -sb "$ROOT/data/big" | cut -f1)

echo "== certificates with the real amssl"
bash tests/fixtures/ssl/amssl-trees.sh "$ROOT/ssl" 127.0.0.1 localhost amanda-rs-bench-ca > /dev/null
SERVER_SSL="$ROOT/ssl/server" CLIENT_SSL="$ROOT/ssl/client"

# ---------------------------------------------------------------- clients
grep -q '^localhost backup amdump' /etc/amandahosts || echo 'localhost backup amdump' >> /etc/amandahosts
chown "root:$AMUSER" "$BIN/amandad-runtar"; chmod 4750 "$BIN/amandad-runtar"
# The real amandad -auth=ssl reads only /etc/amanda/amanda-client.conf: its inetd runs in a
# private mount namespace where /etc/amanda holds ours.
RPORT=$(free_port)
mkdir -p "$ROOT/real/inetd/etc"
printf 'ssl-dir "%s"\nssl-cipher-list "DEFAULT:@SECLEVEL=1"\n' "$CLIENT_SSL" > "$ROOT/real/inetd/etc/amanda-client.conf"
printf '127.0.0.1:%s\tstream\ttcp\tnowait.1000\t%s.%s\t/usr/lib/amanda/amandad\tamandad -auth=ssl amdump\n' \
    "$RPORT" "$AMUSER" "$AMUSER" > "$ROOT/real/inetd/inetd.conf"
setsid unshare --mount -- sh -c "mount --bind $ROOT/real/inetd/etc /etc/amanda && exec /usr/sbin/inetd -i -R 100000 $ROOT/real/inetd/inetd.conf" \
    > "$ROOT/real/inetd/log" 2>&1 < /dev/null &
pids+=($!)
OPORT=$(free_port)
"$BIN/amandad" -auth=bsdtcp amdump --log "$ROOT/ours/amandad-bsdtcp.log" --listen "tcp:127.0.0.1:$OPORT" < /dev/null > /dev/null 2>&1 &
pids+=($!)
SPORT=$(free_port)
printf 'ssl-dir "%s"\n' "$CLIENT_SSL" > "$ROOT/ours/amanda-client.conf"
chmod 644 "$ROOT/ours/amanda-client.conf"
"$BIN/amandad" -auth=ssl amdump --log "$ROOT/ours/amandad-ssl.log" --listen "tcp:127.0.0.1:$SPORT" \
    --client-conf "$ROOT/ours/amanda-client.conf" < /dev/null > /dev/null 2>&1 &
pids+=($!)
sleep 1

# ---------------------------------------------------------------- configurations
CFG="rs-bench-ssl-$$"
conf() { # dir auth port -> amanda.conf
    bench_conf "$1" "$2" "$3" "inparallel 1
tapecycle 20 tapes
ssl-dir \"$SERVER_SSL\"" '    ssl-cipher-list "DEFAULT:@SECLEVEL=1"'
}
for run in real-ssl ours-bsdtcp ours-ssl; do
    d="$ROOT/$run"
    mkdir -p "$d"/{config,holding,state/curinfo,state/index,state/log,vtapes}
    touch "$d/state/tapelist"
done
conf "$ROOT/real-ssl" ssl "$RPORT" > "$ROOT/real-ssl/config/amanda.conf"
conf "$ROOT/ours-bsdtcp" bsdtcp "$OPORT" > "$ROOT/ours-bsdtcp/config/amanda.conf"
conf "$ROOT/ours-ssl" ssl "$SPORT" > "$ROOT/ours-ssl/config/amanda.conf"
# ssl: the disklist host is the client certificate's name (amssl's fingerprint layout).
printf '127.0.0.1 %s bench\n' "$ROOT/data/big" > "$ROOT/real-ssl/config/disklist"
printf 'localhost %s bench\n' "$ROOT/data/big" > "$ROOT/ours-bsdtcp/config/disklist"
printf '127.0.0.1 %s bench\n' "$ROOT/data/big" > "$ROOT/ours-ssl/config/disklist"
chown -R "$AMUSER:$AMUSER" "$ROOT/real-ssl" "$ROOT/ours-bsdtcp" "$ROOT/ours-ssl" "$ROOT/ours"
ln -sfn "$ROOT/real-ssl/config" "/etc/amanda/$CFG"

# ---------------------------------------------------------------- runs
declare -A WALL CPU RATE RSS
best() { # label rate: keeps the best dump rate
    python3 -c "import sys; sys.exit(0 if '${RATE[$1]:-}' == '' or $2 > ${RATE[$1]:-0} else 1)" && RATE[$1]=$2 || true
}
for round in $(seq 1 "$ROUNDS"); do
    for label in ours-bsdtcp ours-ssl; do
        echo "== round $round, $label: dumper + our amandad"
        rm -rf "$ROOT/$label/holding"/* "$ROOT/$label/state/curinfo"/* "$ROOT/$label/state/log"/*
        measure "$label" "$BIN/dumper" run "$ROOT/$label/config/amanda.conf" --progress plain
        kbs=$(awk '/DUMP SUMMARY:/{f=1;next} f && /OK$/{print $(NF-2); exit}' "$ROOT/out.$label" || true)
        [ -n "$kbs" ] || { echo "dumper failed:"; cat "$ROOT/out.$label"; exit 1; }
        best "$label" "$(python3 -c "print(f'{$kbs/1024:.0f}')")"
        rm -rf "$ROOT/$label/holding"/*
    done
    echo "== round $round, real-ssl: real amdump (no taper) + real amandad"
    rm -rf "$ROOT/real-ssl/holding"/* "$ROOT/real-ssl/state/curinfo"/* "$ROOT/real-ssl/state/log"/*
    measure real-ssl runuser -u "$AMUSER" -- /usr/sbin/amdump --no-taper "$CFG"
    kps=$(cat "$ROOT/real-ssl/state/log"/log.* "$ROOT/real-ssl/state/log"/oldlog/log.* 2>/dev/null | sed -n 's/^SUCCESS dumper .*kps \([0-9.]*\).*/\1/p' | head -1 || true)
    [ -n "$kps" ] || { echo "real amdump failed:"; cat "$ROOT/out.real-ssl"; grep -h "FAIL\|ERROR" "$ROOT/real-ssl/state/log"/* || true; exit 1; }
    best real-ssl "$(python3 -c "print(f'{$kps/1024:.0f}')")"
    rm -rf "$ROOT/real-ssl/holding"/*
done

# ---------------------------------------------------------------- table
echo
printf '%-40s %8s %10s %12s %8s %10s %8s\n' "server ($BIG_MIB MiB level 0)" "wall s" "MiB/s" "dump MiB/s" "CPU s" "CPU s/GiB" "RSS MiB"
for l in ours-bsdtcp ours-ssl real-ssl; do
    case $l in
    ours-bsdtcp) name="dumper + our amandad, bsdtcp";;
    ours-ssl) name="dumper + our amandad, ssl";;
    real-ssl) name="real amdump + real amandad, ssl";;
    esac
    python3 -c "
w,c,b=${WALL[$l]},${CPU[$l]},$bytes
print(f'%-40s %8.2f %10.0f %12s %8.2f %10.2f %8s' % ('$name',w,b/1048576/w,'${RATE[$l]}',c,c/(b/2**30),'${RSS[$l]}'))"
done
python3 -c "
ob,os_,rs=${WALL[ours-bsdtcp]},${WALL[ours-ssl]},${WALL[real-ssl]}
rb,rso,rr=${RATE[ours-bsdtcp]},${RATE[ours-ssl]},${RATE[real-ssl]}
print(f'ours ssl / ours bsdtcp: end to end {ob/os_:.2f}x, dump rate {rso/max(rb,1):.2f}x (target >= 0.8x)')
print(f'ours ssl / real ssl:    end to end {rs/os_:.2f}x, dump rate {rso/max(rr,1):.2f}x')"
