// Tells watchers that a customer's usage changed. In-process; a multi-replica deployment relays the
// same notifications between replicas.
import { EventEmitter } from "node:events";

export class UsageChanges {
  private readonly emitter = new EventEmitter().setMaxListeners(0);

  notify(customerId: string, featureKey: string | null): void {
    this.emitter.emit(customerId, featureKey);
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
