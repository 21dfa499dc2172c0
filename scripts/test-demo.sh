#!/bin/sh
# `make test-demo`: runs the README's first command (the demo) in a temporary directory with a
# time limit, twice (the second run must reuse what the first made), checks the printed URL
# answers 200, then stops everything. Ends with `N passed, N failed` like the test suite.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/slapos-demo-XXXXXX")
export SLAPOS_DEMO_DIR="$work/node" SLAPOS_DEMO_PORT="${SLAPOS_DEMO_PORT:-18091}" SLAPOS_DEMO_TIMEOUT=600
passed=0
failed=0
check() { # name, command...
  name=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok - $name"; else failed=$((failed + 1)); echo "not ok - $name"; fi
}
demo_run() { # log file
  timeout 900 sh "$top/scripts/demo.sh" > "$1" 2>&1
  rc=$?
  sed 's/^/  | /' "$1"
  [ $rc = 0 ] || return 1
  url=$(sed -n 's/^demo: the sample service is running: //p' "$1")
  [ -n "$url" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url")" = 200 ] &&
    # the page shows the parameter the demo requested: it flowed from request to service
    curl -s --max-time 5 "$url" | grep -q '<h1>Hello from the SlapOS demo</h1>'
}
check "demo deploys the sample Software Release and its URL answers 200 with the requested greeting" demo_run "$work/first.log"
completed() { stat -c %Y "$SLAPOS_DEMO_DIR"/opt/slapgrid/*/.completed 2>/dev/null; }
before=$(completed)
start=$(date +%s)
check "demo run again reuses the node and still answers 200" demo_run "$work/second.log"
echo "  second run: $(( $(date +%s) - start )) s"
check "second run did not rebuild the Software Release" test -n "$before" -a "$before" = "$(completed)"
sh "$top/scripts/demo.sh" stop > /dev/null 2>&1
check "after scripts/demo.sh stop, the demo brings the service back" demo_run "$work/third.log"
sh "$top/scripts/demo.sh" stop > /dev/null 2>&1
rm -rf "$work"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
