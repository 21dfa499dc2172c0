#!/bin/sh
# One command from a fresh clone to a running SlapOS service (`make demo`):
# installs what is missing, builds dist/slapos, starts a local SlapOS Master (slapos proxy)
# on SQLite, prepares a standalone node under a work directory (no system users, no host
# network change), supplies and requests the sample Software Release, runs
# `slapos node software` and `slapos node instance`, and prints the URL of the service.
# Run again, it reuses what is there.  `scripts/demo.sh stop` stops everything.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
work=${SLAPOS_DEMO_DIR:-$top/build/demo}
port=${SLAPOS_DEMO_PORT:-18080}
slapos="$top/dist/slapos"
say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

stop() {
  if [ -S "$work/srv/supervisord.socket" ] && command -v supervisorctl >/dev/null; then
    supervisorctl -c "$work/srv/etc/supervisord.conf" shutdown >/dev/null 2>&1 || true
  fi
  if [ -f "$work/proxy.pid" ]; then kill "$(cat "$work/proxy.pid")" 2>/dev/null || true; rm -f "$work/proxy.pid"; fi
  say "stopped (data kept in $work; remove it to start from scratch)"
}
[ "${1:-}" = stop ] && { stop; exit 0; }

# --- what the demo needs ---
missing=""
command -v supervisord >/dev/null || missing="$missing supervisor"
command -v buildout >/dev/null || missing="$missing python3-zc.buildout"
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || die "install Debian packages:$missing (as root: apt-get install$missing)"
  say "installing$missing"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
cd "$top"
[ -x node_modules/.bin/esbuild ] || { say "installing npm packages"; npm ci --no-audit --no-fund >/dev/null; }
make -s dist/slapos
mkdir -p "$work/bin" "$work/log" "$work/opt" "$work/srv" "$work/etc/ssl/partition_pki"

# Debian's zc.buildout 2.13 needs this shim on Python 3.11 (collections.abc names).
mkdir -p "$work/buildout-shim"
cat > "$work/buildout-shim/sitecustomize.py" <<'PY'
import collections, collections.abc
for _n in ('MutableMapping', 'Mapping', 'Sequence', 'MutableSequence', 'Callable'):
    if not hasattr(collections, _n):
        setattr(collections, _n, getattr(collections.abc, _n))
PY
cat > "$work/bin/buildout" <<SH
#!/bin/sh
PYTHONPATH="$work/buildout-shim\${PYTHONPATH:+:\$PYTHONPATH}" exec $(command -v buildout) "\$@"
SH
chmod 0755 "$work/bin/buildout"

# --- configuration: a standalone node talking to a local proxy ---
cfg="$work/etc/slapos.cfg"
if [ ! -f "$cfg" ]; then
  cat > "$cfg.tmp" <<CFG
[slapos]
computer_id = demo
master_url = http://127.0.0.1:$port/
master_rest_url = http://127.0.0.1:$port/hateoas
software_root = $work/opt
instance_root = $work/srv
buildout = $work/bin/buildout
root_check = false
pidfile_software = $work/slapgrid-sr.pid
pidfile_instance = $work/slapgrid-cp.pid
pidfile_report = $work/slapgrid-ur.pid
watchdog_command = $slapos node watchdog
certificate_repository_path = $work/etc/ssl/partition_pki

[slapformat]
alter_user = false
alter_network = false
root_check = false
partition_amount = 1
computer_xml = $work/slapos.xml
computer_json = $work/slapos.json
interface_name = lo
# partitions listen on loopback addresses, so nothing on the host network changes
ipv4_local_network = 127.0.1.0/24
create_tap = false
create_tun = false

[slapproxy]
host = 127.0.0.1
port = $port
database_uri = $work/proxy.db
CFG
  mv "$cfg.tmp" "$cfg"
  say "wrote $cfg"
fi

# --- the local master ---
if [ -f "$work/proxy.pid" ] && kill -0 "$(cat "$work/proxy.pid")" 2>/dev/null; then
  say "proxy already running (pid $(cat "$work/proxy.pid"))"
else
  "$slapos" proxy start --cfg "$cfg" > "$work/log/proxy.log" 2>&1 &
  echo $! > "$work/proxy.pid"
  i=0
  until grep -q 'Listening on' "$work/log/proxy.log"; do
    i=$((i + 1)); [ $i -lt 100 ] || die "proxy did not start: $(tail -2 "$work/log/proxy.log")"
    kill -0 "$(cat "$work/proxy.pid")" 2>/dev/null || die "proxy stopped: $(tail -2 "$work/log/proxy.log")"
    sleep 0.1
  done
  say "proxy listening on http://127.0.0.1:$port/"
fi

export SLAPOS_CONFIGURATION="$cfg" SLAPOS_CLIENT_CONFIGURATION="$cfg"
run() { timeout "${SLAPOS_DEMO_TIMEOUT:-600}" "$slapos" "$@"; }
run node format --now -q || die "node format failed"

# --- the sample Software Release, rendered with its absolute location ---
sr="$work/sr"
if [ ! -f "$sr/software.cfg" ]; then
  rm -rf "$sr" && cp -r "$top/test/fixtures/software-release" "$sr"
  sed -e "s|@SR_DIR@|$sr|g" -e "s|@SLAP_PYTHON_PATH@||g" "$sr/software.cfg.in" > "$sr/software.cfg"
fi
run supply "$sr/software.cfg" demo -q
run request demo-instance "$sr/software.cfg" -q > /dev/null 2>&1 || true
say "building the Software Release (buildout)"
run node software --now || die "node software failed (log: slapos node software --now -v)"
say "deploying the instance"
run node instance --now
run node instance --now || true   # a second pass picks up the published connection parameters

out=$(run request demo-instance "$sr/software.cfg" 2>&1) || true
url=$(printf '%s\n' "$out" | grep -o 'http://127\.0\.1\.[0-9]*:[0-9]*/' | head -1)
[ -n "$url" ] || die "the instance published no URL yet: $out"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true)
[ "$code" = 200 ] || die "$url answered $code"
say "the sample service is running: $url"
say "look around: $slapos proxy show --cfg $cfg ; $slapos service list --cfg $cfg"
say "stop everything: scripts/demo.sh stop"
