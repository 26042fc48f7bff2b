#!/usr/bin/env bash
# `npm run test:citus [-- files…]`: the PostgreSQL suites on a throwaway Citus cluster (a
# coordinator and two workers), which is taken down afterwards. Each test file's database is made
# on every node with the extension (scripts/citus/databases.ts). Without arguments: the contract,
# concurrency, live (two processes), crash, property, audit and database suites. The per-driver
# suites run their postgres case only (TEST_DRIVERS=postgres): `npm test` covers PGlite.
set -euo pipefail
script_dir=$(cd "$(dirname "$0")" && pwd)
cd "$script_dir/../.."

suites=(test/api test/concurrency test/realtime test/crash test/property test/db test/cli/audit.test.ts test/cli/audit-invariants.test.ts)
[ "$#" -gt 0 ] && suites=("$@")
export TEST_DRIVERS=${TEST_DRIVERS:-postgres}
exec "$script_dir/with-cluster.sh" npx vitest run "${suites[@]}"
