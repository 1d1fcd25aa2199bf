// grpc.health.v1.Health on both listeners: "" is the whole server, other names are services.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthCheckResponse,
} from "../../gen/grpc/health/v1/health_pb.js";

export { Health, ServingStatus };

/** The serving status of the server ("") and of each service, with change notification. */
export class HealthState {
  private readonly statuses = new Map<string, ServingStatus>();
  private readonly listeners = new Set<() => void>();
  private stopped = false;

  set(service: string, status: ServingStatus): void {
    if (this.stopped) return;
    this.update(service, status);
  }

  get(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }

  entries(): ReadonlyMap<string, ServingStatus> {
    return this.statuses;
  }

  /** Marks everything NOT_SERVING for good: later set() calls are ignored. Call it first on shutdown. */
  shutdown(): void {
    this.stopped = true;
    if (!this.statuses.has("")) this.update("", ServingStatus.NOT_SERVING);
    for (const service of this.statuses.keys()) this.update(service, ServingStatus.NOT_SERVING);
  }

  /** The status of `service` now, then each change, until `signal` aborts. */
  async *watch(service: string, signal: AbortSignal): AsyncGenerator<ServingStatus> {
    let wake: (() => void) | null = null;
    const notify = (): void => wake?.();
    this.listeners.add(notify);
    signal.addEventListener("abort", notify);
    try {
      let last: ServingStatus | undefined;
      while (!signal.aborted) {
        const current = this.statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
        if (current !== last) {
          last = current;
          yield current;
          continue; // the status may have changed while the consumer was busy
        }
        await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
      }
    } finally {
      this.listeners.delete(notify);
      signal.removeEventListener("abort", notify);
    }
  }

  private update(service: string, status: ServingStatus): void {
    if (this.statuses.get(service) === status) return;
    this.statuses.set(service, status);
    for (const listener of this.listeners) listener();
  }
}

function response(status: ServingStatus): HealthCheckResponse {
  return create(HealthCheckResponseSchema, { status });
}

export function createHealthService(state: HealthState): ServiceImpl<typeof Health> {
  return {
    check(req) {
      const status = state.get(req.service);
      if (status === undefined) throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound);
      return response(status);
    },
    list() {
      const statuses: Record<string, HealthCheckResponse> = {};
      for (const [service, status] of state.entries()) statuses[service] = response(status);
      return { statuses };
    },
    async *watch(req, ctx) {
      for await (const status of state.watch(req.service, ctx.signal)) yield response(status);
    },
  };
}
