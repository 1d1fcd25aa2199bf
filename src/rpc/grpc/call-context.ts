// The HandlerContext of one grpc-js call, built lazily. A Track reads only the caller from it, so the
// AbortController, the linked signals and the Headers copies that connect-es's createHandlerContext
// makes for every call are made here only when a handler asks for them.
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextKey, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import type { Metadata } from "@grpc/grpc-js";
import type { Principal } from "../../auth/principal.js";
import { principalKey } from "../context.js";
import { metadataToHeaders } from "./metadata.js";

/** What the context needs of the grpc-js call. */
export interface CallSurface {
  readonly metadata: Metadata;
  readonly cancelled: boolean;
  getHost(): string;
  once(event: "cancelled", listener: () => void): unknown;
}

/** Per-call values; the caller's principal is the one every call carries. */
class CallValues implements ContextValues {
  private others: Map<symbol, unknown> | undefined;

  constructor(private principal: Principal | null) {}

  get<T>(key: ContextKey<T>): T {
    if (key.id === principalKey.id) return this.principal as T;
    return this.others?.has(key.id) === true ? (this.others.get(key.id) as T) : key.defaultValue;
  }

  set<T>(key: ContextKey<T>, value: T): this {
    if (key.id === principalKey.id) this.principal = value as Principal | null;
    else (this.others ??= new Map()).set(key.id, value);
    return this;
  }

  delete(key: ContextKey<unknown>): this {
    if (key.id === principalKey.id) this.principal = principalKey.defaultValue;
    else this.others?.delete(key.id);
    return this;
  }
}

export class GrpcCallContext implements HandlerContext {
  readonly requestMethod = "POST";
  readonly protocolName = "grpc";
  readonly service: DescService;
  readonly values: ContextValues;
  private controller: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  private header: Headers | undefined;
  private respHeader: Headers | undefined;
  private respTrailer: Headers | undefined;
  /** The reason given to abort() before anyone asked for the signal. */
  private abortedWith: { reason: unknown } | undefined;

  constructor(
    readonly method: DescMethod,
    private readonly call: CallSurface,
    principal: Principal | null,
    /** ms since the epoch when the call times out (the client's deadline, capped), or Infinity. */
    readonly expiresAt: number,
  ) {
    this.service = method.parent;
    this.values = new CallValues(principal);
  }

  get url(): string {
    return `http://${this.call.getHost()}/${this.service.typeName}/${this.method.name}`;
  }

  readonly timeoutMs = (): number | undefined =>
    Number.isFinite(this.expiresAt) ? Math.max(0, this.expiresAt - Date.now()) : undefined;

  get requestHeader(): Headers {
    return (this.header ??= metadataToHeaders(this.call.metadata));
  }

  get responseHeader(): Headers {
    return (this.respHeader ??= new Headers());
  }

  get responseTrailer(): Headers {
    return (this.respTrailer ??= new Headers());
  }

  /** The response headers and trailers, without creating them when no handler touched them. */
  get sentHeader(): Headers | undefined {
    return this.respHeader;
  }

  get sentTrailer(): Headers | undefined {
    return this.respTrailer;
  }

  /**
   * Aborts on cancel, deadline, or abort() (the listener's cut at shutdown, which reaches every call in
   * flight through its own registry, not through a listener on a shared signal); made on first use.
   */
  get signal(): AbortSignal {
    if (this.controller) return this.controller.signal;
    const controller = new AbortController();
    this.controller = controller;
    if (this.abortedWith) {
      controller.abort(this.abortedWith.reason);
      return controller.signal;
    }
    this.call.once("cancelled", () => controller.abort(cancelled()));
    if (this.call.cancelled) controller.abort(cancelled());
    const left = this.timeoutMs();
    if (left !== undefined && !controller.signal.aborted) {
      this.timer = setTimeout(() => controller.abort(deadlineExceeded()), left);
      this.timer.unref();
    }
    return controller.signal;
  }

  /** The signal if a handler asked for it (an abort error is then matched against its reason). */
  get signalIfMade(): AbortSignal | undefined {
    return this.controller?.signal;
  }

  /** The call is cut (deadline, shutdown): tell a handler still running, and free the timer. */
  abort(reason: unknown): void {
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort(reason);
    else this.abortedWith ??= { reason };
  }

  /** The call is over: a handler still holding the signal sees it abort; nothing is made otherwise. */
  complete(): void {
    clearTimeout(this.timer);
    this.controller?.abort(COMPLETE);
  }
}

/** One shared reason for every call that ends normally: nothing is built per call. */
const COMPLETE = new ConnectError("the call is complete", Code.Canceled);

function cancelled(): ConnectError {
  return new ConnectError("the client cancelled the call", Code.Canceled);
}

function deadlineExceeded(): ConnectError {
  return new ConnectError("the deadline was exceeded", Code.DeadlineExceeded);
}
