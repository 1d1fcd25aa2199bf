// Carries catalogue changes between replicas through Redis pub/sub: a replica that writes a feature,
// plan or customer announces it, and every other replica reloads that entry from the store, so that
// a new limit is used everywhere within a second. A periodic full refresh covers a missed message.
import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { UsageChanges } from "../metering/changes.js";
import type { Catalog, CatalogChange } from "./catalog.js";
import type { CatalogKind } from "./types.js";

const REFRESH_EVERY_MS = 30_000;

interface Notice {
  kind: CatalogKind;
  key: string;
  from: string;
}

export class RedisCatalogSync {
  private readonly replica = randomUUID();
  private readonly channel: string;
  private readonly subscriber: Redis;
  private readonly timer: NodeJS.Timeout;
  private readonly onLocalChange = (change: CatalogChange) => {
    if (change.remote) return;
    const notice: Notice = { kind: change.kind, key: change.key, from: this.replica };
    this.redis.publish(this.channel, JSON.stringify(notice)).catch((error: unknown) => {
      this.logger.warn({ err: error, ...change }, "could not announce a catalogue change; replicas pick it up at their next refresh");
    });
  };

  private constructor(
    private readonly catalog: Catalog,
    private readonly redis: Redis,
    prefix: string,
    private readonly changes: UsageChanges,
    private readonly logger: Pick<Logger, "warn">,
  ) {
    this.channel = `${prefix}catalog`;
    // Its own connection (a subscribed connection can do nothing else), queueing until it is connected.
    this.subscriber = redis.duplicate({ lazyConnect: false, enableOfflineQueue: true });
    this.subscriber.on("error", (error: Error) => logger.warn({ err: error }, "catalogue subscription error"));
    this.subscriber.on("message", (_channel: string, text: string) => void this.receive(text));
    catalog.events.on("change", this.onLocalChange);
    this.timer = setInterval(() => {
      catalog.refresh().catch((error: unknown) => logger.warn({ err: error }, "catalogue refresh failed"));
    }, REFRESH_EVERY_MS);
    this.timer.unref();
  }

  /** Subscribes before resolving, so that no change announced after it is missed. */
  static async start(catalog: Catalog, redis: Redis, prefix: string, changes: UsageChanges, logger: Pick<Logger, "warn">): Promise<RedisCatalogSync> {
    const sync = new RedisCatalogSync(catalog, redis, prefix, changes, logger);
    await sync.subscriber.subscribe(sync.channel);
    return sync;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.catalog.events.off("change", this.onLocalChange);
    await this.subscriber.quit().catch(() => this.subscriber.disconnect());
  }

  private async receive(text: string): Promise<void> {
    let notice: Notice;
    try {
      notice = JSON.parse(text) as Notice;
    } catch {
      return;
    }
    if (notice.from === this.replica) return;
    try {
      await this.catalog.reload(notice.kind, notice.key);
      if (notice.kind === "customer") this.changes.deliver(notice.key, null);
      else this.changes.notifyAll();
    } catch (error) {
      this.logger.warn({ err: error, kind: notice.kind, key: notice.key }, "could not reload a catalogue change");
    }
  }
}
