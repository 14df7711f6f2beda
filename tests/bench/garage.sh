#!/usr/bin/env bash
# A real S3-compatible object store for the tests: Garage (a Rust,
# distributed object store, from the crates registry), on loopback only.
#
#   garage.sh install          build garage into /var/cache/hv-test/garage once (cargo install --locked)
#   garage.sh start DIR [N] [P]  start an N-node cluster (default 1; replication factor N) in DIR,
#                              idempotent; make bucket "hv-bench" and a key; print the environment
#                              hv-backup needs (HV_S3_ENDPOINT, HV_S3_REGION, AWS_*)
#   garage.sh node DIR I stop|start   stop or start node I of the cluster
#   garage.sh stop DIR         stop every node and remove DIR
#
# Node I listens on 127.0.0.1: S3 API PI0, RPC PI1 (I from 1, P default 39:
# 3910, 3911; another cluster at once takes another P). The key is
# imported with a fixed name and random id, kept in DIR/env.
set -euo pipefail

die() { echo "garage.sh: $*" >&2; exit 1; }
VERSION=2.5.0
ROOT=/var/cache/hv-test/garage
BIN=$ROOT/bin/garage

install() {
    local have=""
    # Captured, not piped into grep -q: an early-closed pipe would fail it.
    [[ -x $BIN ]] && have=$("$BIN" --version 2>&1 || true)
    if [[ $have == *"$VERSION"* ]]; then
        return 0
    fi
    echo "garage.sh: building garage $VERSION (once; about 15 minutes on 2 cores)" >&2
    cargo install garage --version "$VERSION" --locked --root "$ROOT" >&2 ||
        die "cargo install garage $VERSION failed (see above)"
    [[ -x $BIN ]] || die "cargo install garage left no $BIN"
}

cfg() { echo "$1/n$2/garage.toml"; }

port() { # DIR I KIND(0: S3, 1: RPC)
    echo "$(cat "$1/base")$2$3"
}

alive() { # DIR I
    local pid
    pid=$(cat "$1/n$2/pid" 2>/dev/null) || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == garage ]]
}

start_node() { # DIR I
    local dir=$1 i=$2
    alive "$dir" "$i" && return
    # fd 9 (the start lock) stays here: a server holding it would block every later start.
    setsid "$BIN" -c "$(cfg "$dir" "$i")" server >>"$dir/n$i/log" 2>&1 </dev/null 9>&- &
    echo $! >"$dir/n$i/pid"
    local t
    for ((t = 0; t < 100; t++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$(port "$dir" "$i" 0)") 2>/dev/null; then return; fi
        sleep 0.1
    done
    die "node $i did not come up; log: $(tail -n 5 "$dir/n$i/log" | tr '\n' ' ')"
}

g() { "$BIN" -c "$(cfg "$1" 1)" "${@:2}"; }

start() { # DIR N BASE
    local dir=$1 n=${2:-1} i
    install
    mkdir -p "$dir"
    [[ -f $dir/base ]] || echo "${3:-39}" >"$dir/base"
    exec 9>"$dir/.lock"
    flock 9
    if [[ -f $dir/env ]] && alive "$dir" 1; then
        for ((i = 2; i <= n; i++)); do start_node "$dir" "$i"; done
        cat "$dir/env"
        return
    fi
    local secret
    secret=$(cat "$dir/rpc_secret" 2>/dev/null || od -An -tx1 -N32 /dev/urandom | tr -d ' \n' | tee "$dir/rpc_secret")
    for ((i = 1; i <= n; i++)); do
        mkdir -p "$dir/n$i/meta" "$dir/n$i/data"
        cat >"$(cfg "$dir" "$i")" <<EOF
metadata_dir = "$dir/n$i/meta"
data_dir = "$dir/n$i/data"
db_engine = "lmdb"
replication_factor = $n
rpc_bind_addr = "127.0.0.1:$(port "$dir" "$i" 1)"
rpc_public_addr = "127.0.0.1:$(port "$dir" "$i" 1)"
rpc_secret = "$secret"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$(port "$dir" "$i" 0)"
root_domain = ".s3.garage.localhost"
EOF
        start_node "$dir" "$i"
    done
    local ids=() id
    for ((i = 1; i <= n; i++)); do
        id=$("$BIN" -c "$(cfg "$dir" "$i")" node id -q 2>/dev/null | cut -d@ -f1)
        ids+=("$id")
        echo "$id" >"$dir/n$i/id"
        ((i == 1)) || g "$dir" node connect "$id@127.0.0.1:$(port "$dir" "$i" 1)" >/dev/null
    done
    for ((i = 1; i <= n; i++)); do
        g "$dir" layout assign -z dc1 -c 1G "${ids[i - 1]}" >/dev/null
    done
    g "$dir" layout apply --version 1 >/dev/null
    # The layout takes a moment to be known everywhere.
    for ((i = 0; i < 100; i++)); do
        g "$dir" bucket create hv-bench >/dev/null 2>&1 && break
        g "$dir" bucket info hv-bench >/dev/null 2>&1 && break
        sleep 0.2
    done
    local key_id key_secret
    key_id=GK$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
    key_secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    g "$dir" key import --yes -n hv-bench "$key_id" "$key_secret" >/dev/null
    g "$dir" bucket allow --read --write --owner hv-bench --key hv-bench >/dev/null
    cat >"$dir/env" <<EOF
HV_S3_ENDPOINT=http://127.0.0.1:$(port "$dir" 1 0)
HV_S3_REGION=garage
AWS_ACCESS_KEY_ID=$key_id
AWS_SECRET_ACCESS_KEY=$key_secret
EOF
    cat "$dir/env"
}

node() { # DIR I stop|start
    case $3 in
    stop)
        local pid
        pid=$(cat "$1/n$2/pid" 2>/dev/null) || return 0
        kill "$pid" 2>/dev/null || true
        for ((t = 0; t < 100; t++)); do alive "$1" "$2" || return 0; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        ;;
    start)
        start_node "$1" "$2"
        # Introduce it to the nodes that run, rather than wait for the
        # nodes to find each other again (slow under load).
        local j
        for j in "$1"/n*; do
            j=${j##*/n}
            [[ $j == "$2" ]] && continue
            alive "$1" "$j" || continue
            "$BIN" -c "$(cfg "$1" "$2")" node connect \
                "$(cat "$1/n$j/id")@127.0.0.1:$(port "$1" "$j" 1)" >/dev/null 2>&1 || true
        done
        ;;
    *) die "node DIR I stop|start" ;;
    esac
}

stop() { # DIR
    local n
    [[ -d $1 ]] || return 0
    for n in "$1"/n*; do
        [[ -d $n ]] && node "$1" "${n##*/n}" stop
    done
    rm -rf "$1"
}

case ${1:-} in
install) install ;;
start) start "$2" "${3:-1}" "${4:-39}" ;;
node) node "$2" "$3" "$4" ;;
stop) stop "$2" ;;
*) die "usage: garage.sh install | start DIR [N] | node DIR I stop|start | stop DIR" ;;
esac
