// The calls a listener must cut when it stops waiting for them at shutdown (WatchUsage, TrackStream,
// any call still running after the grace period). A set of the calls' own AbortControllers rather than
// one shared AbortSignal with a listener per call: thousands of calls in flight would pass Node's
// listener limit on the shared signal (MaxListenersExceededWarning) and pay an EventTarget
// registration and removal each. The gRPC listener needs none of this: it keeps its calls in flight
// already, and cuts each one itself.
export class CallsInFlight {
  /** Each call's controller, and what else to do for it at shutdown. */
  private readonly controllers = new Map<AbortController, ((reason: unknown) => void) | undefined>();
  private stoppedWith: { reason: unknown } | undefined;

  /** Aborts `controller` with the shutdown reason if the listener stops first; forgets it once it aborts. */
  private add(controller: AbortController, onShutdown: ((reason: unknown) => void) | undefined): void {
    if (this.stoppedWith !== undefined) {
      onShutdown?.(this.stoppedWith.reason);
      controller.abort(this.stoppedWith.reason);
      return;
    }
    if (controller.signal.aborted) return;
    this.controllers.set(controller, onShutdown);
    controller.signal.addEventListener("abort", () => this.controllers.delete(controller), { once: true });
  }

  /**
   * A signal that aborts when `signal` does, or at shutdown, whichever comes first. `onShutdown` runs
   * just before a shutdown abort: for a call whose implementation never reads its signal (a unary
   * call), it is how the client still gets an answer.
   */
  link(signal: AbortSignal, onShutdown?: (reason: unknown) => void): AbortSignal {
    const controller = new AbortController();
    if (signal.aborted) {
      controller.abort(signal.reason);
      return controller.signal;
    }
    const follow = (): void => controller.abort(signal.reason);
    signal.addEventListener("abort", follow, { once: true });
    controller.signal.addEventListener("abort", () => signal.removeEventListener("abort", follow), { once: true });
    this.add(controller, onShutdown);
    return controller.signal;
  }

  /** Aborts every call in flight, and every call added from now on, with `reason`. */
  abortAll(reason: unknown): void {
    this.stoppedWith ??= { reason };
    for (const [controller, onShutdown] of [...this.controllers]) {
      onShutdown?.(reason);
      controller.abort(reason);
    }
  }
}
