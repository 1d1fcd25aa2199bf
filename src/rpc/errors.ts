// Error handling shared by both listeners: a handler's ConnectError reaches the client as it is;
// any other error is logged and becomes INTERNAL "internal error", so no internals leak.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { presentedKey } from "../auth/secret-keys.js";
import type { HeaderReader } from "../auth/principal.js";

export type RpcLogger = Pick<Logger, "debug" | "info" | "warn" | "error">;

function isAbortError(reason: unknown): boolean {
  return reason instanceof Error && reason.name === "AbortError";
}

/**
 * The error to send for `reason`, thrown by a handler of `procedure`. `signal` is the call's signal:
 * when it has fired (deadline, cancel, shutdown), an abort error thrown because of it gets the
 * signal's code rather than INTERNAL.
 */
export function toConnectError(
  reason: unknown,
  procedure: string,
  logger: RpcLogger,
  signal?: AbortSignal,
): ConnectError {
  if (reason instanceof ConnectError) return reason;
  if (signal?.aborted === true && (reason === signal.reason || isAbortError(reason))) {
    return signal.reason instanceof ConnectError
      ? signal.reason
      : new ConnectError("the call was cancelled", Code.Canceled);
  }
  logger.error({ err: reason, procedure }, "rpc handler failed");
  return new ConnectError("internal error", Code.Internal);
}

async function* guardStream<T>(
  messages: AsyncIterable<T>,
  procedure: string,
  logger: RpcLogger,
  signal: AbortSignal,
): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (reason) {
    throw toConnectError(reason, procedure, logger, signal);
  }
}

/** A Connect interceptor that applies toConnectError to unary and streaming calls. Put it first. */
export function errorInterceptor(logger: RpcLogger): Interceptor {
  return (next) => async (req) => {
    const procedure = `/${req.service.typeName}/${req.method.name}`;
    try {
      const res = await next(req);
      if (!res.stream) return res;
      return { ...res, message: guardStream(res.message, procedure, logger, req.signal) };
    } catch (reason) {
      throw toConnectError(reason, procedure, logger, req.signal);
    }
  };
}

/** The UNAUTHENTICATED error for a request that presented no key, or a key that is not accepted. */
export function unauthenticatedError(header: HeaderReader): ConnectError {
  return presentedKey(header) === null
    ? new ConnectError(
        "missing credential: send a secret key as Authorization: Bearer, or as X-Api-Key",
        Code.Unauthenticated,
      )
    : new ConnectError("invalid credential: the key is not accepted", Code.Unauthenticated);
}

/**
 * A grpc-message value as the gRPC spec has it: only bytes outside printable ASCII, and "%", are
 * percent-encoded. (encodeURIComponent also encodes ":" and others, which grpc-js does not decode.)
 */
export function encodeGrpcMessage(message: string): string {
  let out = "";
  for (const byte of Buffer.from(message, "utf8")) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** "/pkg.Service/Method" -> "pkg.Service"; null for a path of any other shape. */
export function serviceOfPath(path: string): string | null {
  const match = /^\/([^/?]+)\/[^/?]+(?:\?.*)?$/.exec(path);
  return match?.[1] ?? null;
}
