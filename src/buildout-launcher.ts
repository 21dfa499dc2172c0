// The buildout launcher of the node tools: `<home>/bin/buildout`, a shell script that runs the
// system's zc.buildout with a compatibility module on its Python path. Debian 12's
// python3-zc.buildout (2.13) imports collection ABCs from `collections`, which Python 3.10
// removed, and fails at once; the module puts the names back before buildout starts, and
// changes nothing where they exist. `configure local` writes both files and names the
// launcher in `[slapos] buildout`; the packages and the installer carry the same two files
// (scripts/buildout-launcher.ts writes them out for the Makefile).

/** where the files go under a node's home (`/opt/slapos` for a package) */
export const LAUNCHER_PATH = 'bin/buildout'
export const COMPAT_PATH = 'lib/buildout/sitecustomize.py'

export const LAUNCHER = `#!/bin/sh
# buildout for the SlapOS node tools: runs the system's zc.buildout (the first buildout on
# PATH that is not this file, or SLAPOS_BUILDOUT) with ../lib/buildout on PYTHONPATH, whose
# sitecustomize.py lets zc.buildout 2.x run on Python 3.10 and later.
case $0 in */*) here=\${0%/*} ;; *) here=. ;; esac
here=$(cd "$here" && pwd)
real=\${SLAPOS_BUILDOUT:-}
if [ -z "$real" ]; then
  path=\${PATH:-/usr/bin:/bin}
  set -f; IFS=:
  for dir in $path; do
    [ "$dir" = "$here" ] && continue
    if [ -x "$dir/buildout" ]; then real="$dir/buildout"; break; fi
  done
  unset IFS; set +f
fi
if [ -z "$real" ]; then
  echo "buildout: zc.buildout is not installed (Debian: apt-get install python3-zc.buildout; elsewhere: pip install 'zc.buildout<3')" >&2
  exit 127
fi
PYTHONPATH="$here/../lib/buildout\${PYTHONPATH:+:$PYTHONPATH}" exec "$real" "$@"
`

export const COMPAT_MODULE = `# Loaded by the buildout launcher of the SlapOS node tools (through PYTHONPATH): zc.buildout
# 2.x imports collection ABCs from collections, which Python 3.10 removed. Puts the names
# back where they are missing, then runs the sitecustomize this file hides, if any.
import os
import sys

try:
    import collections
    import collections.abc
except ImportError:
    pass
else:
    for _name in ('Callable', 'Iterable', 'Mapping', 'MutableMapping', 'MutableSequence', 'MutableSet', 'Sequence', 'Set'):
        if not hasattr(collections, _name) and hasattr(collections.abc, _name):
            setattr(collections, _name, getattr(collections.abc, _name))

_here = os.path.dirname(os.path.abspath(__file__))
for _dir in sys.path:
    _next = os.path.join(_dir or '.', 'sitecustomize.py')
    if os.path.abspath(_dir or '.') != _here and os.path.isfile(_next):
        with open(_next) as _file:
            exec(compile(_file.read(), _next, 'exec'))
        break
`
