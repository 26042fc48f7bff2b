#!/usr/bin/env bash
# `npm run citus:down`: stops the throwaway Citus cluster that citus:up started in CITUS_DIR and
# removes its folder. Safe to run when no cluster is there.
set -euo pipefail
# shellcheck source=scripts/citus/lib.sh
source "$(dirname "$0")/lib.sh"

if [ ! -d "$state_dir" ]; then
  log "no cluster in $state_dir"
  exit 0
fi
# Only a folder this tooling made is removed: a typo in CITUS_DIR must not delete something else.
if [ ! -f "$state_dir/.credits-citus" ]; then
  fail "$state_dir was not made by citus:up (no .credits-citus marker); not touching it"
fi
stop_nodes
rm -rf "$state_dir"
log "stopped and removed the cluster in $state_dir"
