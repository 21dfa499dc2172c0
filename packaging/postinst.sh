#!/bin/sh
# After installation: the directories a node needs (kept when the package is removed).
set -e
mkdir -p /opt/slapos/log /etc/opt/slapos/ssl/partition_pki /opt/slapgrid /srv/slapgrid
chmod 0711 /etc/opt/slapos
if [ ! -f /etc/opt/slapos/slapos.cfg ]; then
  echo "slapos: to configure this node run 'slapos node register' (SlapOS Master) or 'slapos configure local' (local proxy)"
fi
exit 0
