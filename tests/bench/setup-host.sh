#!/usr/bin/env bash
# Turns a fresh Debian 12 machine into an hv test host: libvirt 11 and QEMU 10
# from bookworm-backports, daemons started without systemd (the bench has no
# init), and /dev/kvm opened to group kvm. Every step checks before it acts, so
# a second run takes about a second.
set -euo pipefail

log() { printf 'setup-host: %s\n' "$*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || { log "run as root (it installs packages and starts libvirtd)"; exit 2; }; }

backports_source() {
    local list=/etc/apt/sources.list.d/hv-backports.list uri
    [ -f "$list" ] && return 0
    # Use the machine's own Debian mirror rather than naming a host here.
    uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '/^deb / && $3 ~ /^bookworm$/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$uri" ] || { log "no Debian mirror found in apt sources; add bookworm-backports by hand"; exit 1; }
    echo "deb $uri bookworm-backports main" >"$list"
    log "added bookworm-backports from $uri"
}

packages() {
    local bp="libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-driver-storage libvirt-daemon-driver-network libvirt-clients qemu-system-x86 qemu-system-modules-spice qemu-utils libvirt-dev"
    local plain="build-essential ca-certificates pkg-config mandoc xz-utils jq procps age zstd util-linux mount e2fsprogs curl prometheus prometheus-alertmanager prometheus-libvirt-exporter libcurl4-openssl-dev xorriso gpg gpg-agent debian-keyring ubuntu-keyring tmux zsh fish nix-bin systemd dbus polkitd ovmf swtpm swtpm-tools virtinst xfsprogs openssh-server iproute2 dnsmasq-base nftables b3sum"
    if dpkg-query -W -f='${Status}\n' $bp $plain 2>/dev/null | grep -vq 'install ok installed' \
        || ! dpkg-query -W $bp $plain >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq -o Dpkg::Use-Pty=0 -t bookworm-backports --no-install-recommends $bp >/dev/null
        apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends $plain >/dev/null
        log "installed $bp $plain"
        restart=1 # a new driver package is loaded only when libvirtd starts
    fi
}

qemu_conf() {
    local conf=/etc/libvirt/qemu.conf
    # libvirt's private mount namespace hides /dev/kvm from QEMU on these hosts.
    grep -q '^namespaces = \[\]' "$conf" || { echo 'namespaces = []' >>"$conf"; restart=1; log "set namespaces = [] in $conf"; }
}

restart=
libvirtd_conf() {
    local conf=/etc/libvirt/libvirtd.conf
    # Read-only access for everyone, as the default polkit policy grants on a
    # host with D-Bus; this bench has no D-Bus, so polkit cannot answer.
    grep -q '^auth_unix_ro = "none"' "$conf" || { echo 'auth_unix_ro = "none"' >>"$conf"; restart=1; log "set auth_unix_ro = none in $conf"; }
}

kvm_device() {
    [ -e /dev/kvm ] || { log "no /dev/kvm: guests will run under TCG only"; return 0; }
    getent group kvm >/dev/null || groupadd -r kvm
    chgrp kvm /dev/kvm && chmod 660 /dev/kvm
}

daemons() {
    if [ -n "$restart" ] && pgrep -x libvirtd >/dev/null; then
        pkill -x libvirtd
        for _ in $(seq 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.1; done
        log "stopped libvirtd to apply its new configuration"
    fi
    pgrep -x virtlogd >/dev/null || { virtlogd -d; log "started virtlogd"; }
    pgrep -x libvirtd >/dev/null || { libvirtd -d; log "started libvirtd"; }
    for _ in $(seq 50); do
        virsh -c qemu:///system version >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    log "libvirtd did not answer on qemu:///system"; exit 1
}

default_pool_dir() { mkdir -p /var/lib/libvirt/images; }

# hv's roles (contrib/polkit/50-hv.rules) and one bench user in each, for the
# role test (tests/tests/deploy.rs, which runs its own polkit-checked libvirtd).
role_users() {
    local role
    for role in operator admin; do
        getent group "hv-$role" >/dev/null || groupadd -r "hv-$role"
        id "hv-test-$role" >/dev/null 2>&1 ||
            useradd -r -M -d /nonexistent -s /usr/sbin/nologin -G "hv-$role" "hv-test-$role"
    done
}

need_root
backports_source
packages
qemu_conf
libvirtd_conf
kvm_device
daemons
default_pool_dir
role_users
log "ready: $(virsh -c qemu:///system version 2>/dev/null | awk '/Running hypervisor/ {print $3, $4}')"
