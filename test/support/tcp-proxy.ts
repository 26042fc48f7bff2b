import net from 'node:net';

/**
 * A TCP forwarder the tests control, put between the server and PostgreSQL.
 * - `freeze()` keeps the open connections up but forwards nothing more on them (a connection
 *   that silently stopped working); new connections work as usual.
 * - `cut()` drops every open connection and refuses new ones (the database host went away);
 *   `restore()` accepts connections again on the same port.
 * - `cutAtFirstStatement()` does the same the moment a connection accepted from then on sends its
 *   first message after the start-up message (the host went away while a connection started).
 */
export class TcpProxy {
  private server: net.Server | null = null;
  private readonly pairs = new Set<{ client: net.Socket; upstream: net.Socket }>();
  private listeningPort = 0;
  private cutOnStatement = false;

  constructor(private readonly target: { host: string; port: number }) {}

  get port(): number {
    return this.listeningPort;
  }

  /** Starts listening: on a free port the first time, on the same one again after a cut. */
  async start(): Promise<number> {
    const server: net.Server = net.createServer((client) => {
      // A connection accepted just as the proxy was cut must not get through.
      if (this.server === server) this.forward(client);
      else client.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.listeningPort, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.listeningPort = (server.address() as net.AddressInfo).port;
    return this.listeningPort;
  }

  freeze(): void {
    for (const { client, upstream } of this.pairs) {
      client.unpipe(upstream);
      upstream.unpipe(client);
      // Keep reading so neither peer is told anything by back-pressure; the bytes are dropped.
      client.on('data', () => {});
      upstream.on('data', () => {});
    }
  }

  async cut(): Promise<void> {
    const server = this.server;
    this.server = null;
    const closed = server ? new Promise<void>((resolve) => server.close(() => resolve())) : Promise.resolve();
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
    await closed;
  }

  cutAtFirstStatement(): void {
    this.cutOnStatement = true;
  }

  async restore(): Promise<void> {
    if (!this.server) await this.start();
  }

  close(): Promise<void> {
    return this.cut();
  }

  private forward(client: net.Socket): void {
    const upstream = net.connect(this.target.port, this.target.host);
    const pair = { client, upstream };
    this.pairs.add(pair);
    if (this.cutOnStatement) {
      // Registered before the pipe, so that the statement is not forwarded.
      let messages = 0;
      client.on('data', () => {
        messages += 1;
        if (messages > 1 && this.cutOnStatement) {
          this.cutOnStatement = false;
          void this.cut();
        }
      });
    }
    for (const socket of [client, upstream]) {
      socket.on('error', () => {});
      socket.on('close', () => {
        this.pairs.delete(pair);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  }
}

/** A proxy to `host:port`, already listening on a free local port. */
export async function startTcpProxy(host: string, port: number): Promise<TcpProxy> {
  const proxy = new TcpProxy({ host, port });
  await proxy.start();
  return proxy;
}
