#!/usr/bin/env bash
# The installed CLI follows Unix conventions: --help/--version on stdout with exit 0,
# usage errors on stderr with exit 2.
set -uo pipefail
cli="$STAGE/bin/batchcore"
status=0
expect() { # expect CODE DESCRIPTION -- command...
    local want=$1 what=$2; shift 3
    "$@" > /tmp/bc_cli_out 2> /tmp/bc_cli_err
    local got=$?
    if [ "$got" -ne "$want" ]; then echo "cli: $what: exit $got, want $want"; cat /tmp/bc_cli_err; status=1; fi
}
expect 0 "--version" -- env -i "$cli" --version
grep -q "^batchcore $(sed -n 's/^#define BC_VERSION_STRING "\(.*\)"/\1/p' "$STAGE/include/batchcore.h")" /tmp/bc_cli_out \
    || { echo "cli: --version output wrong: $(cat /tmp/bc_cli_out)"; status=1; }
expect 0 "--help" -- env -i "$cli" --help
grep -q "^usage: batchcore" /tmp/bc_cli_out || { echo "cli: --help not on stdout"; status=1; }
expect 2 "no arguments" -- env -i "$cli"
grep -q "usage" /tmp/bc_cli_err || { echo "cli: usage not on stderr"; status=1; }
[ -s /tmp/bc_cli_out ] && { echo "cli: usage error wrote to stdout"; status=1; }
expect 2 "unknown command" -- env -i "$cli" no-such-command
# Every listed subcommand answers --help with exit 0 on stdout.
for sub in $(env -i "$cli" --help | awk '/^commands:/{on=1;next} on && /^  [a-z]/{print $1}'); do
    expect 0 "$sub --help" -- env -i "$cli" "$sub" --help
    grep -q "usage: batchcore $sub" /tmp/bc_cli_out || { echo "cli: $sub --help lacks usage"; status=1; }
done
rm -f /tmp/bc_cli_out /tmp/bc_cli_err
exit $status
