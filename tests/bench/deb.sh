#!/usr/bin/env bash
# The two install paths as an admin uses them, checked from what lands on
# disk: `cargo xtask deb` builds a package that apt installs (binaries that
# run, man pages man finds, completions, units naming /usr/bin, the env
# file as a 0600 conffile) and removes again; `cargo xtask install` fills
# an empty DESTDIR for /usr/local, creating every directory it needs.
# Every check fails with a message naming what is wrong.
set -euo pipefail
cd "$(dirname "$0")/../.."
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
fail() { echo "deb.sh: FAIL: $*" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
command -v readelf >/dev/null || fail "readelf is missing: apt-get install binutils"

# The package would take over an admin's /etc/hv/hv.env and purge it.
if [ -e /etc/hv/hv.env ] && ! dpkg -S /etc/hv/hv.env >/dev/null 2>&1; then
    fail "/etc/hv/hv.env exists and no package owns it; this test installs and purges hv's package, move the file away first"
fi
# A package left by an earlier run would make apt keep its files (same
# version) and the checks would look at them.
if dpkg -s hv >/dev/null 2>&1; then
    echo "deb.sh: purging the hv package an earlier run left installed" >&2
    as_root apt-get purge -y -qq hv >/dev/null
fi
stage=$(mktemp -d)
cleanup() {
    rm -rf "$stage"
    if dpkg -s hv >/dev/null 2>&1; then as_root apt-get purge -y -qq hv >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# --- the package
deb=$(cargo xtask deb) || fail "cargo xtask deb failed"
arch=$(dpkg --print-architecture)
[ -f "$deb" ] || fail "cargo xtask deb printed '$deb', which is not a file"
case $(basename "$deb") in
    hv_*_"$arch".deb) ;;
    *) fail "package file $deb is not named hv_<version>_$arch.deb" ;;
esac
version=$(dpkg-deb -f "$deb" Version)
# (grep -q reads from variables: under pipefail a writer it stops early
# would fail the pipeline and turn a match into a miss.)
depends=$(dpkg-deb -f "$deb" Depends)
grep -q 'libvirt0' <<<"$depends" || fail "Depends lacks libvirt0: $depends"
contents=$(dpkg-deb -c "$deb")
grep -q '^-rwxr-xr-x root/root .* \./usr/bin/hv-ls$' <<<"$contents" || fail "usr/bin/hv-ls is not in the package as root/root 0755"
grep -q '^-rw------- root/root .* \./etc/hv/hv.env$' <<<"$contents" || fail "etc/hv/hv.env is not in the package as root/root 0600"

as_root apt-get install -y -qq -o Dpkg::Options::=--force-confold "$deb" >/dev/null \
    || fail "apt-get install $deb failed"
[ "$(dpkg-query -W -f '${Status}' hv)" = "install ok installed" ] || fail "hv is not installed after apt-get install"
[ "$(dpkg-query -W -f '${Version}' hv)" = "$version" ] || fail "installed hv is not version $version"
owner=$(dpkg -S /usr/bin/hv-ls 2>/dev/null | cut -d: -f1) || true
[ "$owner" = hv ] || fail "/usr/bin/hv-ls does not belong to package hv (dpkg -S says '$owner')"
# Every packaged file (but the conffile) is on disk as packaged.
problems=$(dpkg --verify hv 2>&1) || fail "dpkg --verify hv: $problems"
[ -z "$problems" ] || fail "dpkg --verify hv: files differ from the package: $problems"
out=$(/usr/bin/hv-ls --version) || fail "/usr/bin/hv-ls --version exited $?"
[[ $out == "hv-ls ${version//\~/-}"* ]] || fail "/usr/bin/hv-ls --version says '$out', not hv-ls $version"
sections=$(readelf -S --wide /usr/bin/hv-ls) || fail "readelf cannot read /usr/bin/hv-ls"
if grep -Eq '\.debug_(info|line)' <<<"$sections"; then
    fail "/usr/bin/hv-ls carries debug sections: the release profile does not strip"
fi
for bin in bins/hv-*/; do
    name=$(basename "$bin")
    [ -x "/usr/bin/$name" ] || fail "/usr/bin/$name is missing (bins/$name is a command)"
done
page=$(man -w hv-ls) || fail "man -w hv-ls finds no page (is /usr/share/man excluded in /etc/dpkg/dpkg.cfg.d?)"
[ "$(dpkg -S "$page" 2>/dev/null | cut -d: -f1)" = hv ] \
    || fail "man -w hv-ls found $page, not the package's page (a manual install in /usr/local shadows it?)"
files=$(dpkg -L hv)
grep -qx /usr/share/bash-completion/completions/hv-ls <<<"$files" || fail "dpkg -L hv lists no bash completion for hv-ls"
grep -qx /usr/share/zsh/vendor-completions/_hv-ls <<<"$files" || fail "dpkg -L hv lists no zsh completion for hv-ls"
grep -qx /usr/share/fish/vendor_completions.d/hv-ls.fish <<<"$files" || fail "dpkg -L hv lists no fish completion for hv-ls"
grep -qx /usr/share/polkit-1/rules.d/50-hv.rules <<<"$files" || fail "dpkg -L hv lists no polkit rules"
unit=/usr/lib/systemd/system/hv-backup.service
[ -f "$unit" ] || fail "$unit is missing"
grep -q '/usr/bin/hv-backup' "$unit" || fail "$unit does not run /usr/bin/hv-backup"
if grep -q '/usr/local/bin' "$unit"; then fail "$unit still names /usr/local/bin"; fi
conffiles=$(dpkg-query -W -f '${Conffiles}' hv)
grep -q '/etc/hv/hv.env' <<<"$conffiles" || fail "/etc/hv/hv.env is not a conffile"
[ "$(stat -c %a /etc/hv/hv.env)" = 600 ] || fail "/etc/hv/hv.env has mode $(stat -c %a /etc/hv/hv.env), not 600"

as_root apt-get remove -y -qq hv >/dev/null || fail "apt-get remove hv failed"
[ ! -e /usr/bin/hv-ls ] || fail "/usr/bin/hv-ls is still there after apt-get remove hv"
[ ! -e /usr/share/bash-completion/completions/hv-ls ] || fail "the bash completion is still there after apt-get remove hv"
[ -e /etc/hv/hv.env ] || fail "apt-get remove deleted the conffile /etc/hv/hv.env (only purge may)"
as_root apt-get purge -y -qq hv >/dev/null || fail "apt-get purge hv failed"
[ ! -e /etc/hv/hv.env ] || fail "/etc/hv/hv.env is still there after apt-get purge hv"
echo "deb.sh: $(basename "$deb") installs, works and removes cleanly" >&2

# --- cargo xtask install into an empty DESTDIR
cargo xtask install --destdir "$stage" --prefix /usr/local 2>"$stage.log" \
    || { cat "$stage.log" >&2; rm -f "$stage.log"; fail "cargo xtask install --destdir $stage failed"; }
rm -f "$stage.log"
root=$stage/usr/local
for bin in bins/hv-*/; do
    name=$(basename "$bin")
    [ -x "$root/bin/$name" ] || fail "$root/bin/$name is missing or not executable"
    [ "$(stat -c %a "$root/bin/$name")" = 755 ] || fail "$root/bin/$name has mode $(stat -c %a "$root/bin/$name"), not 755"
done
"$root/bin/hv-ls" --version >/dev/null || fail "$root/bin/hv-ls --version failed"
man -w -M "$root/share/man" hv-ls >/dev/null 2>&1 || fail "man finds no hv-ls page under $root/share/man"
for f in share/man/man1/hv-ls.1 share/man/man1/hv-backup-create.1 \
    share/bash-completion/completions/hv-ls share/zsh/site-functions/_hv-ls \
    share/fish/vendor_completions.d/hv-ls.fish lib/systemd/system/hv-backup.timer; do
    [ -f "$root/$f" ] || fail "$root/$f is missing"
    [ "$(stat -c %a "$root/$f")" = 644 ] || fail "$root/$f has mode $(stat -c %a "$root/$f"), not 644"
done
grep -q '/usr/local/bin/hv-backup' "$root/lib/systemd/system/hv-backup.service" \
    || fail "the staged hv-backup.service does not run /usr/local/bin/hv-backup"
[ -f "$stage/etc/polkit-1/rules.d/50-hv.rules" ] || fail "polkit rules not in $stage/etc/polkit-1/rules.d"
[ "$(stat -c %a "$stage/etc/hv/hv.env")" = 600 ] || fail "$stage/etc/hv/hv.env is missing or not mode 600"
echo "deb.sh: cargo xtask install filled an empty DESTDIR" >&2
