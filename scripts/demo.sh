#!/bin/sh
# One command from a fresh clone to a running SlapOS service (`make demo`):
# installs what is missing, builds dist/slapos, configures a standalone node under a work
# directory with `slapos configure local --standalone` (no system users, no host network
# change; its supervisord runs the local master, `slapos proxy`, on SQLite), supplies and
# requests the sample Software Release, runs `slapos node software` and
# `slapos node instance`, and prints the URL of the service.
# Run again, it reuses what is there.  `scripts/demo.sh stop` stops everything.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
work=${SLAPOS_DEMO_DIR:-$top/build/demo}
port=${SLAPOS_DEMO_PORT:-18080}
slapos="$top/dist/slapos"
cfg="$work/etc/opt/slapos/slapos.cfg"
say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

stop() {
  conf="$work/srv/slapgrid/etc/supervisord.conf"
  if [ -f "$conf" ] && command -v supervisorctl >/dev/null; then
    supervisorctl -c "$conf" shutdown >/dev/null 2>&1 || true
  fi
  # as `slapos node boot` does after a reboot: the next run redeploys and starts every partition
  rm -f "$work"/srv/slapgrid/slappart*/.timestamp
  say "stopped (data kept in $work; remove it to start from scratch)"
}
[ "${1:-}" = stop ] && { stop; exit 0; }

# --- what the demo needs ---
cd "$top"
sh scripts/deps.sh node
make -s dist/slapos

run() { timeout "${SLAPOS_DEMO_TIMEOUT:-600}" "$slapos" "$@"; }

# --- a standalone node and its local master (started by the node's supervisord) ---
say "configuring a standalone node in $work"
# run as root, the demo's partitions belong to root: say so explicitly (a node made by a
# regular user runs everything as that user and needs no such flag)
as_root=""
[ "$(id -u)" != 0 ] || as_root=--run-as-root
run configure local --standalone "$work" $as_root \
  --partition-number 3 --daemon-listen-port "$port" -q ||
  die "slapos configure local failed (same command with -v says more)"
export SLAPOS_CONFIGURATION="$cfg" SLAPOS_CLIENT_CONFIGURATION="$cfg"
i=0
until curl -s -o /dev/null "http://127.0.0.1:$port/"; do
  i=$((i + 1)); [ $i -lt 100 ] || die "the local master does not answer on port $port (see $work/opt/slapos/log/slapos-proxy.log)"
  sleep 0.1
done
run node format --now -q || die "node format failed"

# --- the sample Software Release, rendered with its absolute location ---
sr="$work/sr"
if [ ! -f "$sr/software.cfg" ]; then
  rm -rf "$sr" && cp -r "$top/test/fixtures/software-release" "$sr"
  sed -e "s|@SR_DIR@|$sr|g" -e "s|@SLAP_PYTHON_PATH@||g" "$sr/software.cfg.in" > "$sr/software.cfg"
fi
run supply "$sr/software.cfg" local_computer -q
greeting="Hello from the SlapOS demo"
run request demo-instance "$sr/software.cfg" --parameters greeting="$greeting" -q > /dev/null 2>&1 || true
say "building the Software Release (buildout)"
run node software --now -q || die "node software failed (slapos node software --now -v says more)"
say "deploying the instance"
run node instance --now -q || die "node instance failed (slapos node instance --now -v says more)"

out=$(run request demo-instance "$sr/software.cfg" --parameters greeting="$greeting" 2>&1) || true
url=$(printf '%s\n' "$out" | grep -o 'http://127\.0\.1\.[0-9]*:[0-9]*/' | head -1)
[ -n "$url" ] || die "the instance published no URL: $out"
# node instance waited for the release's promise (the port answers); a bounded retry all the same
i=0
until page=$(curl -sf --max-time 5 "$url"); do
  i=$((i + 1)); [ $i -lt 50 ] || die "$url does not answer (slapos node status --cfg $cfg shows the service)"
  sleep 0.2
done
printf '%s' "$page" | grep -q "$greeting" || die "$url does not show the requested greeting: $page"
say "the sample service is running: $url"
say "look around: $slapos proxy show --cfg $cfg ; $slapos node status --cfg $cfg"
say "stop everything: scripts/demo.sh stop"
