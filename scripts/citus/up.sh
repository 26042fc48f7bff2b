#!/usr/bin/env bash
# `npm run citus:up`: starts a throwaway Citus cluster (a coordinator and two workers) for tests
# and benchmarks, and prints on its last line the postgres:// URL of a coordinator database with
# the extension created and the workers registered. When the cluster in CITUS_DIR is up already it
# only prints that URL. `npm run citus:down` stops and removes it.
#
# Settings for a disposable cluster on one small machine: fsync off, small shared buffers, trust
# authentication on 127.0.0.1 only, sockets in the state folder (never /var/run/postgresql, so the
# main PostgreSQL is untouched). Variables: see lib.sh; CITUS_SHARD_COUNT (default 8, Citus says
# 32: fewer shards keep each test database's DDL fast and still spread every table over both
# workers).
set -euo pipefail
script_dir=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=scripts/citus/lib.sh
source "$script_dir/lib.sh"

first_port=${CITUS_PORT:-5433}
database=${CITUS_DATABASE:-credits}
shard_count=${CITUS_SHARD_COUNT:-8}

if cluster_running; then
  log "the cluster in $state_dir is up already"
  coordinator_url
  exit 0
fi

if [ -d "$state_dir" ]; then
  [ -f "$state_dir/.credits-citus" ] || fail "$state_dir exists and was not made by citus:up; set CITUS_DIR elsewhere"
  log "removing the stale cluster in $state_dir"
  "$script_dir/down.sh"
fi

"$script_dir/install.sh"

started=$(date +%s)
mkdir -p "$state_dir"
touch "$state_dir/.credits-citus"
[ "$(id -u)" -eq 0 ] && chown postgres: "$state_dir"

# On any failure from here on, stop what was started and remove the folder, so a failed start
# leaves no server running (the failing node's log has been printed by then).
cleanup_on_failure() {
  local status=$?
  [ "$status" -eq 0 ] && return
  log "start failed; stopping and removing $state_dir"
  stop_nodes
  rm -rf "$state_dir"
  exit "$status"
}
trap cleanup_on_failure EXIT

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

next_free_port() {
  local port=$1
  while port_in_use "$port" || [ "$port" -eq 5432 ]; do port=$((port + 1)); done
  echo "$port"
}

init_node() {
  local dir=$1
  as_owner "$pg_bin/initdb" -D "$dir" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 --no-sync \
    >"$dir.initdb.log" 2>&1 || {
    tail -n 20 "$dir.initdb.log" >&2
    fail "initdb failed for $dir"
  }
  cat >>"$dir/postgresql.conf" <<CONF

# Throwaway Citus test node (scripts/citus/up.sh)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$state_dir'
shared_preload_libraries = 'citus'
max_connections = 200
# Transactions that span nodes commit in two phases.
max_prepared_transactions = 200
# Citus runs a maintenance daemon per database: room for the test files' databases at once.
max_worker_processes = 32
shared_buffers = 32MB
fsync = off
synchronous_commit = off
full_page_writes = off
citus.shard_count = $shard_count
# Loopback only: no TLS between the nodes (Citus would otherwise make certificates and require them).
citus.node_conninfo = 'sslmode=disable'
CONF
}

# Starts a node on the first free port from $2, trying the next ports when another process takes
# the chosen one first (helpers on one machine start clusters at the same time). Prints the port.
start_node() {
  local dir=$1 port=$2 attempt
  for attempt in 1 2 3 4 5; do
    port=$(next_free_port "$port")
    sed -i "/^port = /d" "$dir/postgresql.conf"
    echo "port = $port" >>"$dir/postgresql.conf"
    if as_owner "$pg_bin/pg_ctl" -D "$dir" -l "$dir.log" -w -t 60 start >/dev/null 2>&1; then
      echo "$port"
      return
    fi
    if ! grep -q 'could not bind\|Address already in use\|could not create lock file' "$dir.log"; then break; fi
    log "port $port was taken meanwhile; trying the next one (attempt $attempt)"
    port=$((port + 1))
  done
  log "$(basename "$dir") did not start; the end of $dir.log:"
  tail -n 30 "$dir.log" >&2
  return 1
}

node_ports=()
port=$first_port
for name in "${node_names[@]}"; do
  dir=$(node_dir "$name")
  init_node "$dir"
  port=$(start_node "$dir" "$port")
  node_ports+=("$port")
  log "$name listening on 127.0.0.1:$port"
  port=$((port + 1))
done

for index in "${!node_names[@]}"; do
  node_sql "${node_ports[$index]}" postgres "create database $database" >/dev/null
  node_sql "${node_ports[$index]}" "$database" "create extension citus" >/dev/null
done
coordinator=${node_ports[0]}
node_sql "$coordinator" "$database" "select citus_set_coordinator_host('127.0.0.1', $coordinator)" >/dev/null
for port in "${node_ports[@]:1}"; do
  node_sql "$coordinator" "$database" "select citus_add_node('127.0.0.1', $port)" >/dev/null
done

cat >"$cluster_env" <<ENV
node_ports=(${node_ports[*]})
database=$database
ENV
trap - EXIT
log "coordinator 127.0.0.1:$coordinator, workers ${node_ports[*]:1}, ready in $(($(date +%s) - started)) s (stop with npm run citus:down)"
coordinator_url
