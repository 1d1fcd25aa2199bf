// Tells watchers that a customer's usage changed. In-process; with several replicas a relay (see
// redis-relay.ts) carries local notices to the others, which deliver them to their own watchers.
import { EventEmitter } from "node:events";

export class UsageChanges {
  private readonly emitter = new EventEmitter().setMaxListeners(0);
  private readonly taps = new Set<(customerId: string, featureKey: string | null) => void>();

  /** A change made here: delivered to local watchers and handed to every tap (the relay). */
  notify(customerId: string, featureKey: string | null): void {
    this.deliver(customerId, featureKey);
    for (const tap of this.taps) tap(customerId, featureKey);
  }

  /** A change made elsewhere: delivered to local watchers only. */
  deliver(customerId: string, featureKey: string | null): void {
    this.emitter.emit(customerId, featureKey);
  }

  /** Whether anyone here watches the customer. */
  watched(customerId: string): boolean {
    return this.emitter.listenerCount(customerId) > 0;
  }

  tap(listener: (customerId: string, featureKey: string | null) => void): () => void {
    this.taps.add(listener);
    return () => this.taps.delete(listener);
  }

  /** Calls listener(featureKey) on each change of the customer's usage (null: a wallet or catalogue change). */
  subscribe(customerId: string, listener: (featureKey: string | null) => void): () => void {
    this.emitter.on(customerId, listener);
    return () => this.emitter.off(customerId, listener);
  }

  /** Every watcher of every customer, for catalogue changes that may touch anyone. */
  notifyAll(): void {
    for (const name of this.emitter.eventNames()) this.emitter.emit(name, null);
  }
}
