#!/bin/sh
# Installs the built packages for real and checks them: the .deb with apt inside a Debian
# root made by debootstrap (chroot), the installer in the same root, the .rpm with
# `rpm --root`. Usage: sh scripts/test-packages.sh DEB RPM   (run as root; `make test-packages`).
# Ends with `N passed, N failed`.
set -u
deb=$(realpath "$1")
rpm=$(realpath "$2")
top=$(cd "$(dirname "$0")/.." && pwd)
cache="$top/build/debroot"
work="$top/build/debtest"
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
ko() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { desc=$1; shift; if "$@" >/dev/null 2>&1; then ok "$desc"; else ko "$desc"; fi; }
finish() {
  [ -n "${proxy_pid:-}" ] && kill "$proxy_pid" 2>/dev/null
  umount "$work/proc" 2>/dev/null
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit $?
}
trap finish EXIT

expected_files="/etc/cron.d/slapos-node /etc/logrotate.d/slapos-node /etc/opt/slapos/slapos.cfg.example
/opt/slapos/bin/slapos /opt/slapos/bin/slapos-watchdog /usr/bin/bang /usr/bin/slapconsole /usr/bin/slapformat
/usr/bin/slapgrid-cp /usr/bin/slapgrid-sr /usr/bin/slapgrid-ur /usr/bin/slapos /usr/bin/slapos-watchdog /usr/bin/slapproxy"
want=$(echo $expected_files | tr ' ' '\n' | sort)
got_deb=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's,^\.,,' | grep -v '/$' | sort)
[ "$got_deb" = "$want" ] && ok "deb content list" || { ko "deb content list"; echo "$got_deb"; }
got_rpm=$(rpm -qlp "$rpm" | grep -vx -e /opt/slapos -e /opt/slapos/bin -e /etc/opt/slapos | sort)
[ "$got_rpm" = "$want" ] && ok "rpm content list" || { ko "rpm content list"; echo "$got_rpm"; }
deps=$(dpkg-deb -f "$deb" Depends)
for d in supervisor iproute2 python3-zc.buildout; do
  case "$deps" in *"$d"*) ok "deb depends on $d" ;; *) ko "deb depends on $d" ;; esac
done
check "rpm requires supervisor" sh -c "rpm -qp --requires '$rpm' | grep -qx supervisor"

# --- Debian root ---
if [ ! -x "$cache/bin/sh" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null)
  [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null)
  rm -rf "$cache.tmp"
  debootstrap --variant=minbase bookworm "$cache.tmp" "$mirror" > "$top/build/debootstrap.log" 2>&1 \
    || { ko "debootstrap (see build/debootstrap.log)"; exit 1; }
  mv "$cache.tmp" "$cache"
fi
rm -rf "$work" && cp -a "$cache" "$work"
cp /etc/resolv.conf "$work/etc/resolv.conf"
mount -t proc proc "$work/proc"
cp "$deb" "$work/tmp/slapos.deb"
in_root() { chroot "$work" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
if in_root sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/slapos.deb' > "$top/build/apt-in-root.log" 2>&1; then
  ok "apt installs the .deb with its dependencies in a Debian root"
else
  ko "apt install of the .deb (see build/apt-in-root.log)"
fi
check "slapos --version in the root" in_root slapos --version
check "legacy name slapproxy runs proxy start" sh -c "chroot '$work' slapproxy --help | grep -q 'usage: slapos proxy start'"
check "supervisord came as a dependency" test -x "$work/usr/bin/supervisord"
check "postinst made /srv/slapgrid" test -d "$work/srv/slapgrid"
check "postinst made /etc/opt/slapos/ssl/partition_pki" test -d "$work/etc/opt/slapos/ssl/partition_pki"

cat > "$work/etc/opt/slapos/slapos.cfg" <<'CFG'
[slapos]
software_root = /opt/slapgrid
instance_root = /srv/slapgrid
master_url = http://127.0.0.1:0/
computer_id = computer
[slapproxy]
host = 127.0.0.1
port = 0
database_uri = /var/lib/slapos-proxy.db
CFG
# not through in_root: a function in the background is a subshell, and killing it would leave
# the proxy running; chroot and env exec, so this pid is the proxy's
chroot "$work" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root slapos proxy start --cfg /etc/opt/slapos/slapos.cfg > "$work/tmp/proxy.log" 2>&1 &
proxy_pid=$!
url=""
for _ in $(seq 1 50); do
  url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/' "$work/tmp/proxy.log" | head -1)
  [ -n "$url" ] && break
  sleep 0.2
done
if [ -n "$url" ]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' -d 'url=http://x/s.cfg&computer_id=computer&state=available' "${url}supplySupply")
  [ "$code" = 200 ] && ok "slapos proxy start serves in the root ($url)" || ko "proxy answered $code"
  check "the proxy database is in the root" test -s "$work/var/lib/slapos-proxy.db"
else
  ko "slapos proxy start in the root: $(tail -3 "$work/tmp/proxy.log")"
fi
kill "$proxy_pid" 2>/dev/null; wait "$proxy_pid" 2>/dev/null; proxy_pid=""
check "nothing is left running in the root after SIGTERM" sh -c 'for p in /proc/[0-9]*; do [ "$(readlink "$p/root" 2>/dev/null)" = "$1" ] && exit 1; done; exit 0' sh "$work"

in_root dpkg -r slapos > "$top/build/dpkg-remove.log" 2>&1 && ok "dpkg -r slapos" || ko "dpkg -r slapos"
check "removal took the binary" test ! -e "$work/usr/bin/slapos"
check "removal kept slapos.cfg" test -f "$work/etc/opt/slapos/slapos.cfg"
check "removal kept the cron file (a conffile)" test -f "$work/etc/cron.d/slapos-node"
check "removal kept the proxy database" test -s "$work/var/lib/slapos-proxy.db"

# --- the installer, in the same root, from a local file ---
bin="$top/dist/slapos"
cp "$bin" "$work/tmp/slapos"
cp "$top/dist/install.sh" "$work/tmp/install.sh"
sum=$(sha256sum "$bin" | cut -d' ' -f1)
rm -f "$work/etc/cron.d/slapos-node"
in_root sh /tmp/install.sh --file /tmp/slapos --sha256 0000 > "$work/tmp/i0.log" 2>&1 && ko "a wrong checksum is refused" || ok "a wrong checksum is refused"
check "a refused install leaves no binary" test ! -e "$work/usr/bin/slapos"
if in_root sh /tmp/install.sh --file /tmp/slapos --sha256 "$sum" > "$work/tmp/i1.log" 2>&1; then ok "install.sh --file"; else ko "install.sh: $(tail -2 "$work/tmp/i1.log")"; fi
check "installed binary runs" in_root slapos --version
check "installer linked slapgrid-cp" test -L "$work/usr/bin/slapgrid-cp"
check "installer's cron file equals the package's" cmp "$work/etc/cron.d/slapos-node" "$top/packaging/slapos-node.cron"
check "installer kept the existing slapos.cfg" grep -q 'database_uri = /var/lib/slapos-proxy.db' "$work/etc/opt/slapos/slapos.cfg"
in_root sh /tmp/install.sh --file /tmp/slapos --sha256 "$sum" > "$work/tmp/i2.log" 2>&1
check "a second run changes nothing" sh -c "grep -q 'already' '$work/tmp/i2.log' && ! grep -q -e '^slapos-install: installed' -e '^slapos-install: wrote' -e linked '$work/tmp/i2.log'"

# --- rpm --root ---
rroot=$(mktemp -d)
if rpm --root "$rroot" --initdb && rpm -i --root "$rroot" --nodeps --noscripts "$rpm" > "$top/build/rpm-root.log" 2>&1; then
  ok "rpm -i --root"
  check "the rpm's binary runs" sh -c "test \"\$('$rroot/usr/bin/slapos' --version)\" = \"\$('$bin' --version)\""
  check "the rpm's binary is not stripped or altered" cmp "$rroot/usr/bin/slapos" "$bin"
else
  ko "rpm -i --root (see build/rpm-root.log)"
fi
rm -rf "$rroot"
