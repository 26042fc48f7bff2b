#!/usr/bin/env bash
# Runs a command with DATABASE_URL on a throwaway Citus coordinator: brings a cluster up with
# up.sh, runs the command, and takes the cluster down again even when the command fails or is
# interrupted. A cluster that was up already in CITUS_DIR before is used and left running.
# Exits with the command's status.
#
#   scripts/citus/with-cluster.sh npm run bench -- --quick
set -euo pipefail
script_dir=$(cd "$(dirname "$0")" && pwd)
# Unless told otherwise, a folder of its own per run: never someone's `npm run citus:up` cluster.
export CITUS_DIR=${CITUS_DIR:-${TMPDIR:-/tmp}/credits-citus-run-$$}
# shellcheck source=scripts/citus/lib.sh
source "$script_dir/lib.sh"

[ "$#" -gt 0 ] || fail "usage: with-cluster.sh <command> [arguments…]"

was_running=false
cluster_running && was_running=true
take_down() {
  if [ "$was_running" = false ]; then "$script_dir/down.sh" || true; fi
}
trap take_down EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$(date +%s)
url=$("$script_dir/up.sh" | tail -n 1)
log "cluster ready in $(($(date +%s) - started)) s: $url"
case $url in
postgres://*) ;;
*) fail "citus:up printed no URL" ;;
esac

export DATABASE_URL=$url
set +e
"$@"
status=$?
set -e
log "'$*' exited with $status after $(($(date +%s) - started)) s"
exit "$status"
