#!/usr/bin/env bash
# Extra libvirt hosts on one machine, for the multi-host tests: each is its
# own libvirtd (own /run, /etc, /var/lib, /var/cache and /var/log for
# libvirt, bind-mounted in a private mount namespace, as roles.sh does) in
# its own network namespace, reached over a real sshd in that namespace as
# qemu+ssh://root@ADDR/system.
#
# The namespaces hang off one bridge (hv-hosts, 10.231.0.1/24) in the main
# namespace, so they reach each other (migration) without forwarding; host
# N is 10.231.0.(10+N). Nothing listens on any other address. The client
# side (key, known_hosts) stays in DIR: the bench never touches ~/.ssh. The
# URIs name DIR/ssh, a wrapper that runs ssh with DIR/ssh_config, through
# libvirt's `command` URI parameter. A guest's disk on host I lives in the
# host's own /var/lib/libvirt/images (DIR/hI/lib/images from outside), so a
# migration with --copy-storage really copies it.
#
#   hosts.sh start DIR N        start hosts h1..hN (idempotent); print a hosts file
#   hosts.sh daemon DIR I stop  stop host hI's libvirtd (the host stays reachable by ssh)
#   hosts.sh daemon DIR I start start it again
#   hosts.sh stop DIR           stop every guest and daemon and remove the namespaces (sweep.sh does this)
set -euo pipefail

die() { echo "hosts.sh: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (it makes network namespaces and starts daemons)"

BRIDGE=hv-hosts
NET=10.231.0

addr() { echo "$NET.$((10 + $1))"; }

alive() { # PIDFILE COMM
    [[ -f $1 ]] && [[ $(cat "/proc/$(<"$1")/comm" 2>/dev/null) == "$2" ]]
}

wait_for() { # TEST SECONDS WHAT LOG
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        eval "$1" && return 0
        sleep 0.1
    done
    die "$3 did not come up within $2 s; log: $(tail -n 5 "$4" 2>/dev/null | tr '\n' ' ')"
}

# Writes FILE from stdin only when it changes, by rename: other tests'
# ssh sessions may be reading it right now.
put() { # FILE MODE
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    chmod "$2" "$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}

client() { # DIR: the key and ssh configuration libvirt's ssh transport uses
    local dir=$1
    [[ -f $dir/key ]] || ssh-keygen -q -t ed25519 -N '' -C hv-bench -f "$dir/key"
    put "$dir/ssh_config" 0644 <<EOF
Host *
    User root
    IdentityFile $dir/key
    IdentitiesOnly yes
    UserKnownHostsFile $dir/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    # Longer than any --connect-timeout the tests give, so a host that never
    # answers fails at hv's own timeout, which is what they check.
    ConnectTimeout 120
EOF
    printf '#!/bin/sh\nexec ssh -F "%s" "$@"\n' "$dir/ssh_config" | put "$dir/ssh" 0755
    put "$dir/authorized_keys" 0644 <"$dir/key.pub"
}

bridge() {
    ip link show "$BRIDGE" >/dev/null 2>&1 || {
        ip link add "$BRIDGE" type bridge
        ip addr add "$NET.1/24" dev "$BRIDGE"
    }
    ip link set "$BRIDGE" up
}

network() { # I
    local i=$1 ns=hv-h$1 veth=hv-h$1
    ip netns list | grep -qx "$ns\( .*\)\?" || ip netns add "$ns"
    if ! ip link show "$veth" >/dev/null 2>&1; then
        ip link add "$veth" type veth peer name eth0 netns "$ns"
        ip link set "$veth" master "$BRIDGE" up
        ip -n "$ns" addr add "$(addr "$i")/24" dev eth0
        ip -n "$ns" link set eth0 up
        ip -n "$ns" link set lo up
    fi
}

host_config() { # DIR I
    local h=$1/h$2 uuid
    mkdir -p "$h/etc/qemu" "$h/run" "$h/lib/images" "$h/cache" "$h/log/qemu"
    [[ -f $h/host_uuid ]] || cat /proc/sys/kernel/random/uuid >"$h/host_uuid"
    uuid=$(<"$h/host_uuid")
    # Root reaches the socket through sshd; nobody else can: the socket
    # directory is the host's own /run/libvirt, seen only inside.
    cat >"$h/etc/libvirtd.conf" <<EOF
host_uuid = "$uuid"
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
EOF
    # The bench daemon owns the cgroups; QEMU's namespaces would hide /dev/kvm.
    # All hosts share one hostname, so migration traffic is sent to the
    # host's own address rather than to whatever the hostname resolves to.
    cat >"$h/etc/qemu.conf" <<EOF
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
migration_address = "$(addr "$2")"
migration_host = "$(addr "$2")"
EOF
    [[ -f $h/host_key ]] || ssh-keygen -q -t ed25519 -N '' -C "hv-bench-h$2" -f "$h/host_key"
    cat >"$h/sshd_config" <<EOF
ListenAddress $(addr "$2")
HostKey $h/host_key
PidFile $h/sshd.pid
AuthorizedKeysFile $1/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
EOF
    # One line per address: a host key made anew replaces the old line.
    local known
    known="$(addr "$2") $(cut -d' ' -f1,2 "$h/host_key.pub")"
    if ! grep -qxF "$known" "$1/known_hosts" 2>/dev/null; then
        { grep -v "^$(addr "$2") " "$1/known_hosts" 2>/dev/null || true; echo "$known"; } | put "$1/known_hosts" 0644
    fi
}

BINDS() { # DIR I: the mounts that make the host's libvirt its own
    local h=$1/h$2
    echo "mount --bind $h/run /run/libvirt && mount --bind $h/lib /var/lib/libvirt && mount --bind $h/etc /etc/libvirt && mount --bind $h/cache /var/cache/libvirt && mount --bind $h/log /var/log/libvirt"
}

start_libvirtd() { # DIR I: inside the namespaces sshd already runs in
    local h=$1/h$2
    alive "$h/run/libvirtd.pid" libvirtd && return 0
    nsenter -t "$(<"$h/sshd.pid")" -m -n \
        setsid libvirtd --config /etc/libvirt/libvirtd.conf --pid-file /run/libvirt/libvirtd.pid \
        >>"$h/libvirtd.log" 2>&1 </dev/null 9>&- &
    wait_for "[[ -S $h/run/libvirt-sock ]] && alive $h/run/libvirtd.pid libvirtd" 30 "libvirtd of h$2" "$h/libvirtd.log"
}

stop_libvirtd() { # DIR I
    local h=$1/h$2 pid
    alive "$h/run/libvirtd.pid" libvirtd || return 0
    pid=$(<"$h/run/libvirtd.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$h/run/libvirtd.pid" "$h/run/libvirt-sock" "$h/run/libvirt-sock-ro"
}

start_host() { # DIR I
    local dir=$1 i=$2 h=$1/h$2
    network "$i"
    host_config "$dir" "$i"
    if ! alive "$h/sshd.pid" sshd; then
        mkdir -p /run/sshd
        # sshd is the namespace's first process: libvirtd joins it, and so
        # does every ssh session, which is how virt-ssh-helper finds this
        # host's socket at /run/libvirt.
        setsid ip netns exec "hv-h$i" unshare --mount --propagation private -- \
            sh -c "$(BINDS "$dir" "$i") && exec /usr/sbin/sshd -D -f $h/sshd_config -E $h/sshd.log" \
            </dev/null >>"$h/sshd.log" 2>&1 9>&- &
        wait_for "alive $h/sshd.pid sshd" 10 "sshd of h$i" "$h/sshd.log"
    fi
    start_libvirtd "$dir" "$i"
}

uri() { # DIR I
    echo "qemu+ssh://root@$(addr "$2")/system?command=$1/ssh"
}

start() {
    local dir=$1 n=$2 i
    locked "$dir"
    chmod 0755 "$dir"
    client "$dir"
    bridge
    for ((i = 1; i <= n; i++)); do start_host "$dir" "$i"; done
    for ((i = 1; i <= n; i++)); do
        wait_for "virsh -q -c '$(uri "$dir" "$i")' version >/dev/null 2>&1" 30 "qemu+ssh to h$i" "$dir/h$i/sshd.log"
    done
    for ((i = 1; i <= n; i++)); do default_pool "$dir" "$i"; done
    for ((i = 1; i <= n; i++)); do echo "h$i $(uri "$dir" "$i")"; done
}

# Each host's own /var/lib/libvirt/images (DIR/hI/lib/images seen from
# outside) as its pool "default", as a packaged libvirt host has: a disk
# copied by a migration is created there by the destination's libvirt.
default_pool() { # DIR I
    local u
    u=$(uri "$1" "$2")
    if ! virsh -q -c "$u" pool-info default >/dev/null 2>&1; then
        virsh -q -c "$u" pool-define-as default dir --target /var/lib/libvirt/images >/dev/null
        virsh -q -c "$u" pool-autostart default >/dev/null
    fi
    # (grep reads it all: with pipefail, an early exit would fail virsh)
    virsh -q -c "$u" pool-info default | grep '^State: *running' >/dev/null ||
        virsh -q -c "$u" pool-start default >/dev/null
}

stop() {
    local dir=$1 h i pid name
    for h in "$dir"/h*/; do
        [[ -d $h ]] || continue
        i=${h%/}; i=${i##*/h}
        # Guests outlive their libvirtd: stop them through it first.
        if alive "$h/run/libvirtd.pid" libvirtd; then
            while IFS= read -r name; do
                if [[ -n $name ]]; then
                    virsh -q -c "$(uri "$dir" "$i")" destroy "$name" >/dev/null 2>&1 || true
                fi
            done < <(virsh -q -c "$(uri "$dir" "$i")" list --name 2>/dev/null || true)
        fi
        stop_libvirtd "$dir" "$i"
        if alive "$h/sshd.pid" sshd; then
            pid=$(<"$h/sshd.pid")
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$h/sshd.pid"
        # Whatever still runs in the host's network namespace (a guest
        # whose libvirtd was already gone) goes with it.
        ip netns pids "hv-h$i" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
        ip netns del "hv-h$i" 2>/dev/null || true
        ip link del "hv-h$i" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}

locked() { # DIR: one hosts.sh at a time per DIR; the daemons do not inherit the lock
    mkdir -p "$1"
    exec 9>"$1/lock"
    flock 9
}

case ${1:-} in
start) [[ $# == 3 ]] || die "usage: hosts.sh start DIR N"; start "$2" "$3" ;;
daemon)
    [[ $# == 4 ]] || die "usage: hosts.sh daemon DIR I stop|start"
    locked "$2"
    case $4 in
    stop) stop_libvirtd "$2" "$3" ;;
    start) start_libvirtd "$2" "$3" ;;
    *) die "usage: hosts.sh daemon DIR I stop|start" ;;
    esac
    ;;
stop) [[ $# == 2 ]] || die "usage: hosts.sh stop DIR"; [[ -d $2 ]] || exit 0; locked "$2"; stop "$2" ;;
*) die "usage: hosts.sh start DIR N | daemon DIR I stop|start | stop DIR" ;;
esac
