#!/usr/bin/env bash
# A second, private libvirtd that enforces hv's polkit roles, so the role
# test exercises libvirt's real access driver and polkitd without touching
# the bench daemon or the host's /etc.
#
# The bench daemon runs without a system D-Bus (TEST-GUEST.md); starting one
# for it would make libvirt ask systemd-machined, which cannot run here. So
# this daemon gets its own bus (DBUS_SYSTEM_BUS_ADDRESS), its own polkitd
# whose rules directory holds only hv's generated rules, and its own
# /run, /var/lib, /etc, /var/cache and /var/log for libvirt, bind-mounted in
# a private mount namespace. Its socket lives in DIR/sock, outside the
# namespace, where the test's clients reach it.
#
#   roles.sh start DIR RULES   start bus, polkitd and libvirtd; print the URI
#   roles.sh stop DIR          stop them (also done by sweep.sh)
set -euo pipefail

die() { echo "roles.sh: $*" >&2; exit 1; }

wait_for() { # PATH SECONDS LOG
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -S $1 ]] && return 0
        sleep 0.1
    done
    die "$1 did not appear within $2 s; log: $(tail -n 5 "$3" 2>/dev/null | tr '\n' ' ')"
}

write_bus_config() {
    cat >"$1/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$1/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
  <!-- Only root and polkitd (which it becomes) may own names: libvirtd
       trusts whoever answers as polkit. -->
  <policy user="root">
    <allow own="*"/>
  </policy>
  <policy user="polkitd">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
</busconfig>
EOF
}

write_libvirt_config() {
    mkdir -p "$1/etc/qemu" "$1/run" "$1/lib" "$1/cache" "$1/log" "$1/sock"
    chmod 0777 "$1/sock"
    cat >"$1/etc/libvirtd.conf" <<EOF
unix_sock_dir = "$1/sock"
unix_sock_ro_perms = "0777"
unix_sock_rw_perms = "0777"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "polkit"
access_drivers = [ "polkit" ]
EOF
    cat >"$1/etc/qemu.conf" <<EOF
namespaces = [ ]
stdio_handler = "file"
EOF
}

# Runs "$@" in a new mount namespace where each SRC:DEST pair in $binds is
# bind-mounted first.
in_namespace() {
    local script="" pair
    for pair in $binds; do
        script+="mount --bind ${pair%%:*} ${pair#*:} && "
    done
    setsid unshare --mount --propagation private -- sh -c "${script}exec \"\$@\"" sh "$@"
}

start() {
    local dir=$1 rules=$2
    [[ -f $rules ]] || die "no rules file '$rules'; run cargo xtask gen"
    mkdir -p "$dir/rules" "$dir/no-rules"
    chmod 0755 "$dir" "$dir/rules" "$dir/no-rules"
    install -m 0644 "$rules" "$dir/rules/"
    write_bus_config "$dir"
    write_libvirt_config "$dir"
    export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$dir/bus"

    dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile >"$dir/bus.log" 2>&1 &
    echo $! >"$dir/bus.pid"
    wait_for "$dir/bus" 10 "$dir/bus.log"

    # hv's rules and nothing else: not the distribution's either.
    binds="$dir/rules:/etc/polkit-1/rules.d $dir/no-rules:/usr/share/polkit-1/rules.d"
    in_namespace /usr/lib/polkit-1/polkitd --no-debug >"$dir/polkitd.log" 2>&1 &
    echo $! >"$dir/polkitd.pid"
    # polkitd is ready once it owns its name; libvirtd asks it on first use
    local i
    for ((i = 0; i < 100; i++)); do
        dbus-send --system --print-reply --dest=org.freedesktop.DBus / \
            org.freedesktop.DBus.NameHasOwner string:org.freedesktop.PolicyKit1 2>/dev/null |
            grep -q 'boolean true' && break
        sleep 0.1
    done
    ((i < 100)) || die "polkitd did not start; log: $(tail -n 5 "$dir/polkitd.log" | tr '\n' ' ')"

    binds="$dir/run:/run/libvirt $dir/lib:/var/lib/libvirt $dir/etc:/etc/libvirt $dir/cache:/var/cache/libvirt $dir/log:/var/log/libvirt"
    in_namespace libvirtd --config "$dir/etc/libvirtd.conf" --pid-file "$dir/libvirtd.pid.own" \
        >"$dir/libvirtd.log" 2>&1 &
    echo $! >"$dir/libvirtd.pid"
    wait_for "$dir/sock/libvirt-sock" 30 "$dir/libvirtd.log"
    echo "qemu+unix:///system?socket=$dir/sock/libvirt-sock"
}

stop() {
    local dir=$1 name pid
    declare -A comm=([libvirtd]=libvirtd [polkitd]=polkitd [bus]=dbus-daemon)
    for name in libvirtd polkitd bus; do
        [[ -f $dir/$name.pid ]] || continue
        pid=$(<"$dir/$name.pid")
        # A pid file that outlived its process (a reboot) names someone else.
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null) != "${comm[$name]}" ]]; then
            rm -f "$dir/$name.pid"
            continue
        fi
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/$name.pid"
    done
}

case ${1:-} in
start) [[ $# == 3 ]] || die "usage: roles.sh start DIR RULES"; start "$2" "$3" ;;
stop) [[ $# == 2 ]] || die "usage: roles.sh stop DIR"; stop "$2" ;;
*) die "usage: roles.sh start DIR RULES | stop DIR" ;;
esac
