// A TCP proxy on loopback that slows a server down without touching it: every chunk, both ways, is held
// for `delayMs`, and the client->server direction is capped at `bytesPerSecond`. In front of Postgres it
// makes a slow ledger (each commit takes round trips of 2 x delayMs, and big INSERTs crawl), so that the
// soak can show what meterd does with more events than its ledger can take.
import net from "node:net";

export interface SlowProxy {
  port: number;
  /** `url` with its host and port replaced by the proxy's. */
  url(url: string): string;
  close(): Promise<void>;
}

/** Bytes a direction may hold before it pauses its source (so the proxy itself stays bounded). */
const HIGH_WATER = 1 << 20;

function pipeSlowly(from: net.Socket, to: net.Socket, delayMs: number, bytesPerSecond: number): void {
  const queue: Array<{ chunk: Buffer; at: number }> = [];
  let held = 0;
  let lastRelease = 0;
  let timer: NodeJS.Timeout | null = null;

  const release = () => {
    timer = null;
    const now = Date.now();
    while (queue.length > 0 && queue[0]!.at <= now) {
      const { chunk } = queue.shift()!;
      held -= chunk.length;
      if (!to.destroyed) to.write(chunk);
    }
    if (held < HIGH_WATER && from.isPaused()) from.resume();
    if (queue.length > 0) timer = setTimeout(release, Math.max(1, queue[0]!.at - now));
  };

  from.on("data", (chunk: Buffer) => {
    const now = Date.now();
    const sendTime = bytesPerSecond === Infinity ? 0 : (chunk.length * 1000) / bytesPerSecond;
    const at = Math.max(now + delayMs, lastRelease + sendTime);
    lastRelease = at;
    queue.push({ chunk, at });
    held += chunk.length;
    if (held >= HIGH_WATER) from.pause();
    timer ??= setTimeout(release, Math.max(1, at - now));
  });
  from.on("close", () => {
    // Let what is queued go out, then close the other side.
    const finish = () => (queue.length === 0 ? to.end() : setTimeout(finish, 10));
    finish();
  });
}

export async function startSlowProxy(target: { host: string; port: number }, delayMs: number, bytesPerSecond: number): Promise<SlowProxy> {
  if (!["127.0.0.1", "localhost", "::1"].includes(target.host)) throw new Error(`the bench proxy only forwards to loopback, not ${target.host}`);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target);
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      s.on("error", () => {
        client.destroy();
        upstream.destroy();
      });
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
    }
    pipeSlowly(client, upstream, delayMs, bytesPerSecond);
    pipeSlowly(upstream, client, delayMs, Infinity);
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve((server.address() as net.AddressInfo).port));
  });
  return {
    port,
    url(url) {
      const u = new URL(url);
      u.hostname = "127.0.0.1";
      u.port = String(port);
      return u.toString();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
