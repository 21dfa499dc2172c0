#!/bin/sh
# Lays out the files of the slapos package under $1 (a package build root), from the
# built binary $2 and the buildout launcher written under $3 (scripts/buildout-launcher.ts). Shared by the .deb and .rpm builds so both ship the same content.
set -eu
root=$1
bin=$2
launcher=$3
here=$(dirname "$0")
install -D -m 0755 "$bin" "$root/usr/bin/slapos"
# The original's path of the node tools: cron entries and supervisord's watchdog entry use it.
mkdir -p "$root/opt/slapos/bin"
ln -sf /usr/bin/slapos "$root/opt/slapos/bin/slapos"
ln -sf /usr/bin/slapos "$root/opt/slapos/bin/slapos-watchdog"
# Old program names: slapos picks the command from the name it is run as.
for name in slapgrid slapgrid-sr slapgrid-cp slapgrid-ur slapgrid-supervisorctl slapgrid-supervisord slapformat slapproxy slapproxy-query slapconsole slapos-watchdog bang; do
  ln -sf slapos "$root/usr/bin/$name"
done
# The buildout of the node (slapos.cfg.example names it): the system's zc.buildout, made to run
# on Python 3.10 and later.
install -D -m 0755 "$launcher/bin/buildout" "$root/opt/slapos/bin/buildout"
install -D -m 0644 "$launcher/lib/buildout/sitecustomize.py" "$root/opt/slapos/lib/buildout/sitecustomize.py"
install -D -m 0644 "$here/slapos.cfg.example" "$root/etc/opt/slapos/slapos.cfg.example"
install -D -m 0644 "$here/slapos-node.cron" "$root/etc/cron.d/slapos-node"
install -D -m 0644 "$here/slapos-node.logrotate" "$root/etc/logrotate.d/slapos-node"
