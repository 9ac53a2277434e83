/**
 * A TCP relay the test controls, between an Airlock replica and redis-server, to make the network faults
 * a real deployment meets: a flow frozen without being closed (a NAT or firewall that forgets it and
 * sends no RST), a partition (connections cut and new ones refused), and answers held back on one
 * connection once a given command has passed through it (a slow read, at the exact moment a test needs).
 */
import { once } from 'node:events';
import { createServer, connect, type AddressInfo, type Socket } from 'node:net';

export interface RelayedConnection {
  /** What the client has sent so far (RESP text, lower-cased, the first 64 KiB): which connection is which. */
  readonly sent: string;
  /** Neither side has closed it. */
  readonly open: boolean;
  /** Stops relaying both ways without closing either socket; bytes are dropped, as a black hole does. */
  freeze(): void;
}

export interface TcpRelay {
  readonly url: string;
  readonly connections: readonly RelayedConnection[];
  /** Destroys every connection now and refuses new ones until `heal`. */
  partition(): void;
  /** Refuses new connections (those open go on) until `heal`. */
  refuseNew(): void;
  heal(): void;
  /**
   * Once a client chunk matching `when` has passed through, holds back what Redis answers on that
   * connection until the returned `release` is called; `held` resolves when that has happened.
   */
  holdAnswersAfter(when: (chunk: string) => boolean): { held: Promise<void>; release(): void };
  close(): Promise<void>;
}

const SENT_KEPT = 64 * 1024;

export async function startTcpRelay(targetPort: number): Promise<TcpRelay> {
  const connections: Array<RelayedConnection & { client: Socket; upstream: Socket }> = [];
  let refusing = false;
  let hold: { when: (chunk: string) => boolean; triggered: () => void; release: Promise<void> } | null = null;
  const server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    const upstream = connect(targetPort, '127.0.0.1');
    let frozen = false;
    let held: Promise<void> | null = null;
    let sent = '';
    const entry = {
      client,
      upstream,
      get sent() {
        return sent;
      },
      get open() {
        return !client.destroyed;
      },
      freeze() {
        frozen = true;
      },
    };
    connections.push(entry);
    client.on('data', (chunk: Buffer) => {
      if (frozen) return;
      const text = chunk.toString('latin1').toLowerCase();
      if (sent.length < SENT_KEPT) sent += text.slice(0, SENT_KEPT - sent.length);
      upstream.write(chunk);
      if (hold !== null && held === null && hold.when(text)) {
        held = hold.release;
        hold.triggered();
        hold = null;
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      if (frozen) return;
      // Answers keep their order: each waits for the release, if any.
      if (held === null) client.write(chunk);
      else void held.then(() => client.destroyed || frozen || client.write(chunk));
    });
    client.on('error', () => undefined);
    upstream.on('error', () => undefined);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `redis://127.0.0.1:${port}`,
    connections,
    partition() {
      refusing = true;
      for (const connection of connections) connection.client.destroy();
    },
    refuseNew() {
      refusing = true;
    },
    heal() {
      refusing = false;
    },
    holdAnswersAfter(when) {
      let triggered!: () => void;
      let release!: () => void;
      const held = new Promise<void>((resolve) => (triggered = resolve));
      hold = { when, triggered, release: new Promise<void>((resolve) => (release = resolve)) };
      return { held, release };
    },
    async close() {
      for (const connection of connections) connection.client.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
