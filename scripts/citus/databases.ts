// Throwaway databases next to the one a URL names, for the test suites and the bench, on plain
// PostgreSQL and on a Citus coordinator alike.
//
// On plain PostgreSQL a database is one `create database`. On Citus the metadata (the extension,
// the registered nodes) lives in each database, and a worker only takes shards of a database
// where the extension exists too: so the database is created on every worker with the extension,
// then on the coordinator, which then registers itself and the workers exactly as the database
// the URL names has them. (Citus 13's `citus.enable_create_database_propagation` creates the
// database on the workers, but `citus_add_node` still fails there without the extension, and
// extensions cannot be created across nodes, so it would save nothing.) Whether the server is a
// Citus coordinator is read from that database itself, so nothing else needs configuring.
import postgres from 'postgres';

export interface Node {
  host: string;
  port: number;
}

export interface CitusCluster {
  coordinator: Node;
  workers: Node[];
}

const quiet = { max: 1, onnotice: () => {}, connect_timeout: 10 } as const;

export function databaseUrl(baseUrl: string, name: string, node?: Node): string {
  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  if (node) {
    url.hostname = node.host;
    url.port = String(node.port);
  }
  return url.toString();
}

function baseDatabaseName(baseUrl: string): string {
  return decodeURIComponent(new URL(baseUrl).pathname.slice(1)) || 'postgres';
}

async function withConnection<T>(url: string, work: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, quiet);
  try {
    return await work(sql);
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/** The Citus nodes registered in the database baseUrl names; null when it is not a Citus coordinator. */
export async function citusCluster(baseUrl: string): Promise<CitusCluster | null> {
  return withConnection(baseUrl, async (sql) => {
    const [extension] = await sql<Array<{ citus: boolean }>>`
      select exists (select 1 from pg_extension where extname = 'citus') as citus`;
    if (!extension?.citus) return null;
    const nodes = await sql<Array<{ nodename: string; nodeport: number; groupid: number }>>`
      select nodename, nodeport, groupid from pg_dist_node where noderole = 'primary' and isactive order by nodeid`;
    const base = new URL(baseUrl);
    // Without citus_set_coordinator_host the coordinator is not listed; the URL reaches it.
    const coordinator = nodes.find((node) => node.groupid === 0);
    return {
      coordinator: coordinator
        ? { host: coordinator.nodename, port: coordinator.nodeport }
        : { host: base.hostname, port: Number(base.port || 5432) },
      workers: nodes.filter((node) => node.groupid !== 0).map((node) => ({ host: node.nodename, port: node.nodeport })),
    };
  });
}

async function createOnWorker(baseUrl: string, worker: Node, name: string): Promise<void> {
  await withConnection(databaseUrl(baseUrl, baseDatabaseName(baseUrl), worker), (sql) =>
    sql.unsafe(`create database ${name}`),
  );
  await withConnection(databaseUrl(baseUrl, name, worker), (sql) => sql.unsafe('create extension citus'));
}

async function createOnCoordinator(baseUrl: string, cluster: CitusCluster, name: string): Promise<void> {
  await withConnection(baseUrl, (sql) => sql.unsafe(`create database ${name}`));
  await withConnection(databaseUrl(baseUrl, name), async (sql) => {
    await sql.unsafe('create extension citus');
    await sql`select citus_set_coordinator_host(${cluster.coordinator.host}, ${cluster.coordinator.port})`;
    for (const worker of cluster.workers) await sql`select citus_add_node(${worker.host}, ${worker.port})`;
  });
}

/** Creates database `name` (a plain identifier) beside the one baseUrl names, and returns its URL. */
export async function createDatabase(baseUrl: string, name: string): Promise<string> {
  const cluster = await citusCluster(baseUrl);
  if (!cluster) {
    await withConnection(baseUrl, (sql) => sql.unsafe(`create database ${name}`));
    return databaseUrl(baseUrl, name);
  }
  try {
    await Promise.all(cluster.workers.map((worker) => createOnWorker(baseUrl, worker, name)));
    await createOnCoordinator(baseUrl, cluster, name);
  } catch (error) {
    // A half-made database would be left on some nodes; remove it everywhere, keep the first error.
    await dropDatabase(baseUrl, name).catch(() => {});
    throw error;
  }
  return databaseUrl(baseUrl, name);
}

/** Drops database `name` beside the one baseUrl names, on every Citus node when it is a coordinator. */
export async function dropDatabase(baseUrl: string, name: string): Promise<void> {
  const drop = (sql: postgres.Sql) => sql.unsafe(`drop database if exists ${name} with (force)`);
  await withConnection(baseUrl, drop);
  const cluster = await citusCluster(baseUrl);
  if (!cluster) return;
  // The coordinator's copy goes first: its maintenance daemon would otherwise keep connecting to
  // the workers' copies while they are being dropped.
  await Promise.all(
    cluster.workers.map((worker) => withConnection(databaseUrl(baseUrl, baseDatabaseName(baseUrl), worker), drop)),
  );
}
