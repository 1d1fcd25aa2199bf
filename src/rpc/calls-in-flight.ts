// The calls a listener must cut when it stops waiting for them at shutdown (WatchUsage, TrackStream,
// any call still running after the grace period). A set of the calls' own AbortControllers rather than
// one shared AbortSignal with a listener per call: thousands of calls in flight would pass Node's
// listener limit on the shared signal (MaxListenersExceededWarning) and pay an EventTarget
// registration and removal each. The gRPC listener needs none of this: it keeps its calls in flight
// already, and cuts each one itself.
export class CallsInFlight {
  private readonly controllers = new Set<AbortController>();
  private stoppedWith: { reason: unknown } | undefined;

  /** Aborts `controller` with the shutdown reason if the listener stops first; forgets it once it aborts. */
  private add(controller: AbortController): void {
    if (this.stoppedWith !== undefined) {
      controller.abort(this.stoppedWith.reason);
      return;
    }
    if (controller.signal.aborted) return;
    this.controllers.add(controller);
    controller.signal.addEventListener("abort", () => this.controllers.delete(controller), { once: true });
  }

  /** A signal that aborts when `signal` does, or at shutdown, whichever comes first. */
  link(signal: AbortSignal): AbortSignal {
    const controller = new AbortController();
    if (signal.aborted) {
      controller.abort(signal.reason);
      return controller.signal;
    }
    const follow = (): void => controller.abort(signal.reason);
    signal.addEventListener("abort", follow, { once: true });
    controller.signal.addEventListener("abort", () => signal.removeEventListener("abort", follow), { once: true });
    this.add(controller);
    return controller.signal;
  }

  /** Aborts every call in flight, and every call added from now on, with `reason`. */
  abortAll(reason: unknown): void {
    this.stoppedWith ??= { reason };
    for (const controller of [...this.controllers]) controller.abort(reason);
  }
}
