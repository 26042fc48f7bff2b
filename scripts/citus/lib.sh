# Shared by the citus scripts (sourced, not run): where the throwaway cluster lives and how its
# servers are run.
#
#   CITUS_DIR       state folder: one data folder per node, sockets, logs, cluster.env
#                   (default ${TMPDIR:-/tmp}/credits-citus)
#   CITUS_PORT      first port to try; the nodes take the first free ports from there (default 5433,
#                   next to the main PostgreSQL on 5432, which these scripts never touch)
#   CITUS_DATABASE  the coordinator database that citus:up prepares (default credits)
#   PG_MAJOR        default 15

pg_major=${PG_MAJOR:-15}
pg_bin=/usr/lib/postgresql/$pg_major/bin
state_dir=${CITUS_DIR:-${TMPDIR:-/tmp}/credits-citus}
cluster_env=$state_dir/cluster.env
node_names=(coordinator worker1 worker2)

log() { echo "citus: $*" >&2; }
fail() {
  log "$*"
  exit 1
}

# PostgreSQL refuses to run as root, so under root (CI) the servers run as the postgres OS user.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

node_dir() { echo "$state_dir/$1"; }

# Runs one statement on a node of this cluster, through its socket in the state folder.
node_sql() {
  local port=$1 database=$2 statement=$3
  "$pg_bin/psql" -h "$state_dir" -p "$port" -U postgres -d "$database" -X -q -At -v ON_ERROR_STOP=1 -c "$statement"
}

# The recorded cluster (ports and database), if any; returns 1 when there is none.
load_cluster() {
  [ -f "$cluster_env" ] || return 1
  # shellcheck disable=SC1090
  source "$cluster_env"
}

# True when every recorded node answers.
cluster_running() {
  load_cluster || return 1
  local port
  for port in "${node_ports[@]}"; do
    "$pg_bin/pg_isready" -q -h "$state_dir" -p "$port" || return 1
  done
}

coordinator_url() { echo "postgres://postgres@127.0.0.1:${node_ports[0]}/$database"; }

# Stops every node whose data folder exists (fast shutdown, then immediate), ignoring stopped ones.
stop_nodes() {
  local name dir
  for name in "${node_names[@]}"; do
    dir=$(node_dir "$name")
    [ -f "$dir/postmaster.pid" ] || continue
    as_owner "$pg_bin/pg_ctl" -D "$dir" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      as_owner "$pg_bin/pg_ctl" -D "$dir" -m immediate -w -t 30 stop >/dev/null 2>&1 ||
      log "could not stop $name ($dir)"
  done
}
