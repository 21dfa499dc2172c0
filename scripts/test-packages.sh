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
  umount "$top/build/debtest-installer/proc" 2>/dev/null
  echo "$passed passed, $failed failed"
  [ "$failed" = 0 ]
  exit $?
}
trap finish EXIT

expected_files="/etc/cron.d/slapos-node /etc/logrotate.d/slapos-node /etc/opt/slapos/slapos.cfg.example
/opt/slapos/bin/buildout /opt/slapos/lib/buildout/sitecustomize.py /opt/slapos/bin/slapos /opt/slapos/bin/slapos-watchdog /usr/bin/bang /usr/bin/slapconsole /usr/bin/slapformat
/usr/bin/slapgrid /usr/bin/slapgrid-cp /usr/bin/slapgrid-sr /usr/bin/slapgrid-supervisorctl /usr/bin/slapgrid-supervisord /usr/bin/slapgrid-ur
/usr/bin/slapos /usr/bin/slapos-watchdog /usr/bin/slapproxy /usr/bin/slapproxy-query"
want=$(echo $expected_files | tr ' ' '\n' | sort)
got_deb=$(dpkg-deb -c "$deb" | awk '{print $6}' | sed 's,^\.,,' | grep -v '/$' | sort)
[ "$got_deb" = "$want" ] && ok "deb content list" || { ko "deb content list"; echo "$got_deb"; }
got_rpm=$(rpm -qlp "$rpm" | grep -vx -e /opt/slapos -e /opt/slapos/bin -e /opt/slapos/lib -e /opt/slapos/lib/buildout -e /etc/opt/slapos | sort)
[ "$got_rpm" = "$want" ] && ok "rpm content list" || { ko "rpm content list"; echo "$got_rpm"; }
deps=$(dpkg-deb -f "$deb" Depends)
for d in supervisor iproute2 python3-zc.buildout python3-setuptools; do
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

# What a node operator does after installing, in root $1 (label $2, local master on port $3):
# configure a standalone node, supply and request the sample Software Release, node software,
# node instance, then the service must answer 200 with the requested greeting (from outside
# the root: it shares this machine's network). Stops the node's supervisord at the end.
deploy_sample() {
  r=$1; label=$2; port=$3
  rm -rf "$r/tmp/sr" && cp -r "$top/test/fixtures/software-release" "$r/tmp/sr"
  sed -e 's|@SR_DIR@|/tmp/sr|g' -e 's|@SLAP_PYTHON_PATH@||g' "$r/tmp/sr/software.cfg.in" > "$r/tmp/sr/software.cfg"
  if chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root sh -ec "
      slapos configure local --standalone /srv/node --partition-number 1 --daemon-listen-port $port --run-as-root -q
      . /srv/node/etc/opt/slapos/slapos.env
      slapos supply /tmp/sr/software.cfg local_computer -q
      slapos request sample /tmp/sr/software.cfg --parameters greeting='Hello from $label' -q > /dev/null 2>&1 || true
      slapos node software --now
      slapos node instance --now
      slapos request sample /tmp/sr/software.cfg --parameters greeting='Hello from $label'
    " > "$r/tmp/deploy.log" 2>&1; then
    ok "$label: configure local, supply, request, node software, node instance"
  else
    ko "$label: deployment of the sample Software Release:"; tail -15 "$r/tmp/deploy.log"
  fi
  url=$(grep -o 'http://127\.0\.1\.[0-9]*:[0-9]*/' "$r/tmp/deploy.log" | head -1)
  page=""
  for _ in $(seq 1 50); do
    [ -n "$url" ] && page=$(curl -sf --max-time 5 "$url") && break
    sleep 0.2
  done
  case "$page" in
    *"Hello from $label"*) ok "$label: the service answers 200 with the requested greeting ($url)" ;;
    *) ko "$label: the service at '${url:-no URL published}' does not answer the greeting" ;;
  esac
  chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    slapos node supervisorctl --cfg /srv/node/etc/opt/slapos/slapos.cfg shutdown > /dev/null 2>&1
  for _ in $(seq 1 50); do nothing_runs_in "$r" && break; sleep 0.2; done
  check "$label: nothing is left running in the root after supervisorctl shutdown" nothing_runs_in "$r"
}
nothing_runs_in() { for p in /proc/[0-9]*; do [ "$(readlink "$p/root" 2>/dev/null)" = "$1" ] && return 1; done; return 0; }
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
check "nothing is left running in the root after SIGTERM" nothing_runs_in "$work"

deploy_sample "$work" "the installed .deb" 18094

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
check "installer linked every old name" sh -c "for n in slapgrid slapgrid-supervisorctl slapgrid-supervisord slapproxy-query; do test -L '$work/usr/bin/'\$n || exit 1; done"
check "installer's cron file equals the package's" cmp "$work/etc/cron.d/slapos-node" "$top/packaging/slapos-node.cron"
check "installer kept the existing slapos.cfg" grep -q 'database_uri = /var/lib/slapos-proxy.db' "$work/etc/opt/slapos/slapos.cfg"
in_root sh /tmp/install.sh --file /tmp/slapos --sha256 "$sum" > "$work/tmp/i2.log" 2>&1
check "a second run changes nothing" sh -c "grep -q 'already' '$work/tmp/i2.log' && ! grep -q -e '^slapos-install: installed' -e '^slapos-install: wrote' -e linked '$work/tmp/i2.log'"

# --- the installer on a fresh Debian root: it installs what the node needs, then the node deploys ---
fresh="$top/build/debtest-installer"
rm -rf "$fresh" && cp -a "$cache" "$fresh"
cp /etc/resolv.conf "$fresh/etc/resolv.conf"
mount -t proc proc "$fresh/proc"
cp "$bin" "$fresh/tmp/slapos"
cp "$top/dist/install.sh" "$fresh/tmp/install.sh"
in_fresh() { chroot "$fresh" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }
in_fresh sh /tmp/install.sh --file /tmp/slapos --sha256 "$sum" --no-deps > "$fresh/tmp/nodeps.log" 2>&1 &&
  ko "--no-deps on a root without supervisord succeeded" ||
  check "--no-deps on a root without them stops with the exact list" grep -q 'the node needs: supervisord buildout ip setuptools;' "$fresh/tmp/nodeps.log"
check "... and installs nothing" test ! -e "$fresh/usr/bin/slapos"
if in_fresh sh /tmp/install.sh --file /tmp/slapos --sha256 "$sum" > "$fresh/tmp/install.log" 2>&1; then
  ok "install.sh on a fresh root"
else
  ko "install.sh on a fresh root:"; tail -5 "$fresh/tmp/install.log"
fi
check "the installer installed supervisord, zc.buildout and ip with apt-get" sh -c "test -x '$fresh/usr/bin/supervisord' && test -x '$fresh/usr/bin/buildout' && test -x '$fresh/usr/bin/ip'"
check "the installer's buildout launcher equals the package's" cmp "$fresh/opt/slapos/bin/buildout" "$top/build/deb/opt/slapos/bin/buildout"
deploy_sample "$fresh" "the installer" 18095
umount "$fresh/proc"

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
