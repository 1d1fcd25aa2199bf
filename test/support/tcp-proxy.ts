// A small TCP proxy for fault tests, in place of toxiproxy: it listens on 127.0.0.1:0 in front of one
// target (Redis, Postgres) and passes bytes through both ways until told otherwise.
//
//   cut()            destroys every connection (with a TCP reset) and resets each new one at once: the
//                    target looks down, and clients fail fast instead of hanging.
//   stall()          stops forwarding (both ways) but keeps every connection open, and lets new ones
//                    connect but go nowhere: a silent partition, where a client learns nothing until
//                    its own timeouts fire.
//   restore()        accepts and forwards again (a stalled connection resumes where it stopped).
//   dropNextReply(m) waits for a client->server chunk that matches m, forwards it (so the server runs
//                    the command), swallows the next server->client chunk on that connection, then
//                    resets that connection: a reply lost after the server acted on it. A client like
//                    ioredis reconnects and resends the command.
//   onRequest(m, f)  calls f once, synchronously, when a client->server chunk that matches m has been
//                    forwarded: a hook to cause a fault at an exact step of a protocol.
//   close()          stops listening and destroys every connection.
//
// Matchers see one chunk as it arrived from the socket (a command split across chunks is not joined),
// which is enough for the commands these tests look for: each is written by the client in one write.
// Only loopback traffic: the proxy listens on 127.0.0.1 and the target is given by the caller.
import net from "node:net";

/** A string or RegExp is tested against the chunk decoded as latin1 (bytes as they are). */
export type ChunkMatcher = string | RegExp | ((chunk: Buffer) => boolean);

export interface DroppedReply {
  /** The client->server chunk that matched. */
  request: Buffer;
  /** The server->client chunk that was swallowed. */
  reply: Buffer;
}

export interface DropOptions {
  /** Give up (reject) when nothing matched in this long. Default 10 s. */
  timeoutMs?: number;
  /** After swallowing the reply, cut() the whole proxy instead of resetting only that connection. */
  thenCut?: boolean;
}

interface Rule {
  matches(chunk: Buffer): boolean;
}

interface DropRule extends Rule {
  thenCut: boolean;
  request?: Buffer;
  resolve(dropped: DroppedReply): void;
}

interface HookRule extends Rule {
  fire(): void;
}

interface Conn {
  client: net.Socket;
  upstream: net.Socket;
  /** Set once a request on this connection armed a drop: the next reply chunk is swallowed. */
  dropping: DropRule | null;
}

function toPredicate(matcher: ChunkMatcher): (chunk: Buffer) => boolean {
  if (typeof matcher === "function") return matcher;
  if (typeof matcher === "string") return (chunk) => chunk.toString("latin1").includes(matcher);
  return (chunk) => {
    matcher.lastIndex = 0;
    return matcher.test(chunk.toString("latin1"));
  };
}

export class TcpProxy {
  private readonly conns = new Set<Conn>();
  private readonly drops: DropRule[] = [];
  private readonly hooks: HookRule[] = [];
  private refusing = false;
  private stalled = false;
  private closed: Promise<void> | null = null;
  /** Connections accepted so far (including refused ones): shows that a client really went through. */
  accepted = 0;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    readonly target: { host: string; port: number },
  ) {}

  /** Starts a proxy on 127.0.0.1:<free port> in front of `target`. */
  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    if (!["127.0.0.1", "localhost", "::1"].includes(target.host)) {
      throw new Error(`the test proxy only forwards to loopback, not ${target.host}`);
    }
    let proxy: TcpProxy | undefined;
    const server = net.createServer((client) => {
      if (proxy) proxy.accept(client);
      else client.destroy();
    });
    const port = await new Promise<number>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port));
    });
    proxy = new TcpProxy(server, port, target);
    return proxy;
  }

  /** A proxy in front of the host and port of a redis:// or postgres:// URL. */
  static forUrl(url: string): Promise<TcpProxy> {
    const u = new URL(url);
    const fallback = u.protocol.startsWith("redis") ? 6379 : 5432;
    return TcpProxy.start({ host: u.hostname.replace(/^\[|\]$/g, ""), port: u.port === "" ? fallback : Number(u.port) });
  }

  /** `url` with its host and port replaced by the proxy's. */
  url(url: string): string {
    const u = new URL(url);
    u.hostname = "127.0.0.1";
    u.port = String(this.port);
    return u.toString();
  }

  /** Open connections through the proxy now. */
  get connections(): number {
    return this.conns.size;
  }

  get isCut(): boolean {
    return this.refusing;
  }

  /** Resets every connection and every new one, until restore(). */
  cut(): void {
    this.refusing = true;
    for (const conn of [...this.conns]) this.kill(conn);
  }

  /** Stops forwarding without closing anything, until restore(). */
  stall(): void {
    this.stalled = true;
    for (const conn of this.conns) {
      conn.client.pause();
      conn.upstream.pause();
    }
  }

  get isStalled(): boolean {
    return this.stalled;
  }

  restore(): void {
    this.refusing = false;
    if (this.stalled) {
      this.stalled = false;
      for (const conn of this.conns) {
        conn.client.resume();
        conn.upstream.resume();
      }
    }
  }

  dropNextReply(matcher: ChunkMatcher, options: DropOptions = {}): Promise<DroppedReply> {
    const matches = toPredicate(matcher);
    return new Promise<DroppedReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        const at = this.drops.indexOf(rule);
        if (at >= 0) this.drops.splice(at, 1);
        reject(new Error(`dropNextReply: no matching request within ${options.timeoutMs ?? 10_000} ms`));
      }, options.timeoutMs ?? 10_000);
      const rule: DropRule = {
        matches,
        thenCut: options.thenCut ?? false,
        resolve(dropped) {
          clearTimeout(timer);
          resolve(dropped);
        },
      };
      this.drops.push(rule);
    });
  }

  /** Calls `fn` once, right after the first client->server chunk that matches has been forwarded. */
  onRequest(matcher: ChunkMatcher, fn: () => void, timeoutMs = 10_000): Promise<void> {
    const matches = toPredicate(matcher);
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        const at = this.hooks.indexOf(rule);
        if (at >= 0) this.hooks.splice(at, 1);
        reject(new Error(`onRequest: no matching request within ${timeoutMs} ms`));
      }, timeoutMs);
      const rule: HookRule = {
        matches,
        fire() {
          clearTimeout(timer);
          try {
            fn();
            resolve();
          } catch (error) {
            reject(error instanceof Error ? error : new Error(String(error)));
          }
        },
      };
      this.hooks.push(rule);
    });
  }

  close(): Promise<void> {
    this.closed ??= new Promise<void>((resolve) => {
      this.refusing = true;
      for (const conn of [...this.conns]) this.kill(conn);
      this.server.close(() => resolve());
    });
    return this.closed;
  }

  private accept(client: net.Socket): void {
    this.accepted++;
    client.on("error", () => {});
    if (this.refusing) {
      client.resetAndDestroy();
      return;
    }
    client.setNoDelay(true);
    const upstream = net.connect({ host: this.target.host, port: this.target.port });
    upstream.setNoDelay(true);
    upstream.on("error", () => {});
    const conn: Conn = { client, upstream, dropping: null };
    this.conns.add(conn);
    if (this.stalled) {
      client.pause();
      upstream.pause();
    }

    client.on("data", (chunk: Buffer) => {
      // A write before the upstream connects is buffered by the socket.
      upstream.write(chunk);
      if (conn.dropping === null) {
        const at = this.drops.findIndex((rule) => rule.matches(chunk));
        if (at >= 0) {
          const [rule] = this.drops.splice(at, 1);
          rule!.request = chunk;
          conn.dropping = rule!;
        }
      }
      for (let at = 0; at < this.hooks.length; ) {
        const hook = this.hooks[at]!;
        if (hook.matches(chunk)) {
          this.hooks.splice(at, 1);
          hook.fire();
        } else {
          at++;
        }
      }
    });
    upstream.on("data", (chunk: Buffer) => {
      const rule = conn.dropping;
      if (rule === null) {
        client.write(chunk);
        return;
      }
      conn.dropping = null;
      if (rule.thenCut) this.cut();
      else this.kill(conn);
      rule.resolve({ request: rule.request ?? Buffer.alloc(0), reply: chunk });
    });
    const end = () => this.kill(conn);
    client.on("close", end);
    upstream.on("close", end);
  }

  /** Resets both sides: the client sees ECONNRESET, as when a server or a network dies. */
  private kill(conn: Conn): void {
    if (!this.conns.delete(conn)) return;
    if (!conn.client.destroyed) conn.client.resetAndDestroy();
    if (!conn.upstream.destroyed) conn.upstream.destroy();
  }
}
