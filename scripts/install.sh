#!/bin/sh
# Installs the slapos executable on a node:  curl -fsSL <url>/install.sh | sh -s -- --url <url>/slapos
# or, from a file already on the machine:    sh install.sh --file ./slapos [--sha256 HEX]
# It checks the checksum, installs supervisor, zc.buildout, setuptools, iproute2 if missing (apt-get
# or dnf), /usr/bin/slapos, the old program names, the buildout launcher, the cron entries and
# the example configuration (never replacing one that exists). Again, it changes only what is missing or outdated.
set -eu

url=""
file=""
sha=""
deps=yes
root="${SLAPOS_INSTALL_ROOT:-}"

say() { printf 'slapos-install: %s\n' "$*"; }
die() { printf 'slapos-install: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --url) url=${2:?--url needs a value}; shift 2 ;;
    --file) file=${2:?--file needs a value}; shift 2 ;;
    --sha256) sha=${2:?--sha256 needs a value}; shift 2 ;;
    --no-deps) deps=no; shift ;;
    -h|--help)
      sed -n '2,6p' "$0" 2>/dev/null | sed 's/^# \{0,1\}//'
      echo "options: --url URL | --file PATH, --sha256 HEX (else URL.sha256 or PATH.sha256 when present),"
      echo "  --no-deps: do not install supervisor, zc.buildout, setuptools and iproute2 with apt-get or dnf (stop if missing)"
      exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[ -n "$url" ] || [ -n "$file" ] || die "give --url URL or --file PATH of the slapos executable"
[ "$(id -u)" = 0 ] || die "run as root (the node tools install into /usr/bin, /etc and /opt)"

arch=$(uname -m)
case "$arch" in
  x86_64|amd64) ;;
  *) die "unsupported architecture $arch: slapos is built for x86_64" ;;
esac
distro=unknown
if [ -r "$root/etc/os-release" ]; then
  distro=$(. "$root/etc/os-release" && echo "${ID:-unknown} ${VERSION_ID:-}")
fi
say "system: $distro ($arch)"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
if [ -n "$url" ]; then
  if command -v curl >/dev/null 2>&1; then fetch() { curl -fsSL -o "$2" "$1"; }
  elif command -v wget >/dev/null 2>&1; then fetch() { wget -q -O "$2" "$1"; }
  else die "neither curl nor wget is installed"; fi
  fetch "$url" "$tmp/slapos" || die "cannot download $url"
  if [ -z "$sha" ] && fetch "$url.sha256" "$tmp/sha" 2>/dev/null; then sha=$(cut -d' ' -f1 "$tmp/sha"); fi
else
  [ -f "$file" ] || die "no such file: $file"
  cp "$file" "$tmp/slapos"
  if [ -z "$sha" ] && [ -f "$file.sha256" ]; then sha=$(cut -d' ' -f1 "$file.sha256"); fi
fi
actual=$(sha256sum "$tmp/slapos" | cut -d' ' -f1)
if [ -n "$sha" ]; then
  [ "$actual" = "$sha" ] || die "checksum mismatch: expected $sha, got $actual; nothing was installed"
  say "checksum verified ($actual)"
else
  say "warning: no checksum given (--sha256), installing unverified file ($actual)"
fi
chmod 0755 "$tmp/slapos"
version=$("$tmp/slapos" --version 2>/dev/null) || die "the downloaded file does not run on this system (glibc 2.28 or newer is needed)"

# --- what the node runs beside slapos: supervisord, zc.buildout, ip ---
need_deps() {
  missing=""
  command -v supervisord >/dev/null 2>&1 || missing="$missing supervisord"
  command -v buildout >/dev/null 2>&1 || missing="$missing buildout"
  command -v ip >/dev/null 2>&1 || missing="$missing ip"
  python3 -c 'import setuptools' >/dev/null 2>&1 || missing="$missing setuptools"
  [ -n "$missing" ]
}
if [ -n "$root" ]; then
  say "installing under $root: the system's packages are left alone"
elif need_deps; then
  if [ "$deps" = no ]; then
    die "the node needs:$missing; install them (Debian: apt-get install supervisor python3-zc.buildout python3-setuptools iproute2) or run without --no-deps"
  elif command -v apt-get >/dev/null 2>&1; then
    say "installing with apt-get: supervisor python3-zc.buildout python3-setuptools iproute2 (missing:$missing)"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q supervisor python3-zc.buildout python3-setuptools iproute2 ||
      { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q supervisor python3-zc.buildout python3-setuptools iproute2; }; } >"$tmp/deps.log" 2>&1 ||
      die "apt-get could not install supervisor python3-zc.buildout python3-setuptools iproute2 (its output: $(tail -1 "$tmp/deps.log")); nothing was installed"
  elif command -v dnf >/dev/null 2>&1; then
    say "installing with dnf: supervisor python3-zc-buildout python3-setuptools iproute (missing:$missing)"
    dnf install -y -q supervisor python3-zc-buildout python3-setuptools iproute >"$tmp/deps.log" 2>&1 ||
      die "dnf could not install supervisor python3-zc-buildout python3-setuptools iproute (its output: $(tail -1 "$tmp/deps.log")); supervisor comes from EPEL on RHEL, zc.buildout also from pip ('zc.buildout<3'); nothing was installed"
  else
    die "the node needs:$missing, and neither apt-get nor dnf is here to install them; nothing was installed"
  fi
  need_deps && die "still missing after the install:$missing; nothing more was installed"
  say "installed what the node needs (supervisord, buildout, setuptools, ip)"
fi

mkdir -p "$root/usr/bin"
if [ -f "$root/usr/bin/slapos" ] && cmp -s "$tmp/slapos" "$root/usr/bin/slapos"; then
  say "/usr/bin/slapos is already $version"
else
  cp "$tmp/slapos" "$root/usr/bin/.slapos.new" && mv -f "$root/usr/bin/.slapos.new" "$root/usr/bin/slapos"
  say "installed /usr/bin/slapos ($version)"
fi
for name in slapgrid slapgrid-sr slapgrid-cp slapgrid-ur slapgrid-supervisorctl slapgrid-supervisord slapformat slapproxy slapproxy-query slapconsole slapos-watchdog bang; do
  [ -L "$root/usr/bin/$name" ] || { ln -sf slapos "$root/usr/bin/$name"; say "linked /usr/bin/$name"; }
done
mkdir -p "$root/opt/slapos/bin" "$root/opt/slapos/log" "$root/etc/opt/slapos/ssl/partition_pki" "$root/opt/slapgrid" "$root/srv/slapgrid" "$root/etc/cron.d"
chmod 0711 "$root/etc/opt/slapos"
for name in slapos slapos-watchdog; do
  [ -L "$root/opt/slapos/bin/$name" ] || { ln -sf /usr/bin/slapos "$root/opt/slapos/bin/$name"; say "linked /opt/slapos/bin/$name"; }
done

write_once() { # path, then the content on stdin
  if [ -e "$root$1" ]; then cat >/dev/null; say "kept existing $1"; else cat > "$root$1.new" && mv "$root$1.new" "$root$1"; say "wrote $1"; fi
}
write_once /etc/cron.d/slapos-node <<'CRON'
@CRON@
CRON
write_ours() { # path, mode, then the content on stdin: files of the slapos tools, kept up to date
  mkdir -p "$(dirname "$root$1")"
  cat > "$root$1.new"
  if [ -f "$root$1" ] && cmp -s "$root$1.new" "$root$1"; then rm -f "$root$1.new"; chmod "$2" "$root$1"
  else chmod "$2" "$root$1.new" && mv -f "$root$1.new" "$root$1"; say "wrote $1"; fi
}
write_ours /opt/slapos/bin/buildout 0755 <<'LAUNCHER'
@LAUNCHER@
LAUNCHER
write_ours /opt/slapos/lib/buildout/sitecustomize.py 0644 <<'COMPAT'
@COMPAT@
COMPAT
write_once /etc/opt/slapos/slapos.cfg.example <<'CFG'
@CFG@
CFG

if [ -f "$root/etc/opt/slapos/slapos.cfg" ]; then
  say "configuration /etc/opt/slapos/slapos.cfg is present; cron runs the node every minute"
else
  say "next: 'slapos node register NODE_NAME --token TOKEN' (SlapOS Master) or 'slapos configure local' (local proxy)"
fi
