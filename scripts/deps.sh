#!/bin/sh
# `make deps`: installs what the node and the tests need and is missing: Debian packages
# (supervisord, buildout, and the tools the tests and the packages use, chromium for the
# panel test, fish for the completion test, socat and firewalld with nftables for the
# manager and firewall tests) when run as root,
# and the npm packages of the build. Says what it installs; quiet when nothing is missing.
# `scripts/deps.sh node` checks only what running the demo needs.
set -eu
cd "$(dirname "$0")/.."
if [ "${1:-}" = node ]; then
  want="supervisor python3-zc.buildout python3-setuptools python3-lxml curl"
else
  want="supervisor python3-zc.buildout python3-setuptools python3-lxml iproute2 passwd util-linux binutils rpm dpkg-dev debootstrap openssl procps curl chromium fish socat nftables iptables firewalld dbus-daemon"
fi
missing=""
for p in $want; do
  dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "deps: missing Debian packages:$missing (as root: apt-get install$missing)" >&2
    exit 1
  fi
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq $missing > /dev/null
fi
if [ ! -x node_modules/.bin/esbuild ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "deps: installing npm packages"
  npm ci --no-audit --no-fund > /dev/null
fi
