// Relays usage-change notices between replicas through Redis pub/sub, so that WatchUsage on one
// replica sees a Track answered by another. Notices are batched (one message per 25 ms at most), so
// the hot path pays a Set insertion, not a Redis round trip.
import { randomUUID } from "node:crypto";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { UsageChanges } from "./changes.js";

const FLUSH_EVERY_MS = 25;

interface Message {
  from: string;
  /** [customerId, featureKey | null] pairs. */
  changes: Array<[string, string | null]>;
}

export class RedisUsageRelay {
  private readonly replica = randomUUID();
  private readonly channel: string;
  private readonly subscriber: Redis;
  private readonly pending = new Map<string, [string, string | null]>();
  private timer: NodeJS.Timeout | null = null;
  private readonly untap: () => void;

  private constructor(
    private readonly changes: UsageChanges,
    private readonly redis: Redis,
    prefix: string,
    private readonly logger: Pick<Logger, "warn">,
  ) {
    this.channel = `${prefix}usage`;
    // Its own connection (a subscribed connection can do nothing else), queueing until it is connected.
    this.subscriber = redis.duplicate({ lazyConnect: false, enableOfflineQueue: true });
    this.subscriber.on("error", (error: Error) => logger.warn({ err: error }, "usage relay subscription error"));
    this.subscriber.on("message", (_channel: string, text: string) => this.receive(text));
    this.untap = changes.tap((customerId, featureKey) => {
      this.pending.set(`${customerId}\u0000${featureKey ?? ""}`, [customerId, featureKey]);
      this.timer ??= setTimeout(() => this.flush(), FLUSH_EVERY_MS);
    });
  }

  static async start(changes: UsageChanges, redis: Redis, prefix: string, logger: Pick<Logger, "warn">): Promise<RedisUsageRelay> {
    const relay = new RedisUsageRelay(changes, redis, prefix, logger);
    await relay.subscriber.subscribe(relay.channel);
    return relay;
  }

  async stop(): Promise<void> {
    this.untap();
    if (this.timer) clearTimeout(this.timer);
    this.flush();
    await this.subscriber.quit().catch(() => this.subscriber.disconnect());
  }

  private flush(): void {
    this.timer = null;
    if (this.pending.size === 0) return;
    const message: Message = { from: this.replica, changes: [...this.pending.values()] };
    this.pending.clear();
    this.redis.publish(this.channel, JSON.stringify(message)).catch((error: unknown) => {
      this.logger.warn({ err: error }, "could not relay usage changes; watchers elsewhere see them at their next change");
    });
  }

  private receive(text: string): void {
    let message: Message;
    try {
      message = JSON.parse(text) as Message;
    } catch {
      return;
    }
    if (message.from === this.replica) return;
    for (const [customerId, featureKey] of message.changes) {
      if (this.changes.watched(customerId)) this.changes.deliver(customerId, featureKey);
    }
  }
}
