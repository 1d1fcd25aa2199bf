// What a customer token may do, beyond what the authenticator decides from the headers: act for its
// own customer only, on its own features only, and only add usage (never correct or rewrite it).
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, type HandlerContext } from "@connectrpc/connect";
import { MeteringService, type TrackRequest } from "../../gen/meterd/v1/metering_pb.js";
import type { CustomerTokenPrincipal } from "../auth/principal.js";
import { MeterError } from "../metering/errors.js";
import { principalKey } from "./context.js";

/** The procedures a customer token may call; everything else needs a secret key. */
export const CUSTOMER_TOKEN_PROCEDURES: ReadonlySet<string> = new Set(
  [
    MeteringService.method.track,
    MeteringService.method.check,
    MeteringService.method.getMetrics,
    MeteringService.method.watchUsage,
    MeteringService.method.listEvents,
    MeteringService.method.queryUsage,
  ].map(
    (m) => `/${MeteringService.typeName}/${m.name}`,
  ),
);

/** With a customer token, an event may be dated at most this far back: closed periods stay as they are. */
export const TOKEN_MAX_BACKDATE_MS = 5 * 60_000;

/** The customer token of the call, or null when the caller holds a secret key. */
export function customerTokenOf(ctx: HandlerContext): CustomerTokenPrincipal | null {
  const principal = ctx.values.get(principalKey);
  return principal?.kind === "customer" ? principal : null;
}

/** Throws PERMISSION_DENIED unless the caller holds a secret key. */
export function requireSecretKey(ctx: HandlerContext, what: string): void {
  if (ctx.values.get(principalKey)?.kind !== "secret") {
    throw new MeterError(Code.PermissionDenied, "SECRET_KEY_REQUIRED", `${what} needs a secret key`);
  }
}

/** The customer must be the token's; the feature ("" is every feature) one the token allows. */
export function checkScope(token: CustomerTokenPrincipal, customerId: string, featureKey: string): void {
  if (customerId !== token.customerId) {
    throw new MeterError(
      Code.PermissionDenied,
      "CUSTOMER_NOT_ALLOWED",
      `this customer token is for customer "${token.customerId}" only`,
      "customer_id",
      "must be the token's customer",
    );
  }
  if (featureKey !== "" && token.featureKeys !== null && !token.featureKeys.includes(featureKey)) {
    throw new MeterError(
      Code.PermissionDenied,
      "FEATURE_NOT_ALLOWED",
      `this customer token does not allow feature "${featureKey}" (it allows ${token.featureKeys.join(", ")})`,
      "feature_key",
      "must be one of the token's features",
    );
  }
}

/** Track with a token: its scope, a positive amount, and a timestamp that does not rewrite the past. */
export function checkTokenTrack(token: CustomerTokenPrincipal, req: TrackRequest, now = Date.now()): void {
  checkScope(token, req.customerId, req.featureKey);
  if (req.amount !== undefined && req.amount < 0) {
    throw new MeterError(
      Code.PermissionDenied,
      "NEGATIVE_AMOUNT_FORBIDDEN",
      "amount may be negative only with a secret key",
      "amount",
      "must not be negative",
    );
  }
  if (req.timestamp !== undefined && timestampMs(req.timestamp) < now - TOKEN_MAX_BACKDATE_MS) {
    throw new MeterError(
      Code.PermissionDenied,
      "BACKDATE_FORBIDDEN",
      `timestamp may be more than ${TOKEN_MAX_BACKDATE_MS / 60_000} minutes in the past only with a secret key`,
      "timestamp",
      `must be at most ${TOKEN_MAX_BACKDATE_MS / 60_000} minutes in the past`,
    );
  }
}

/** The metrics a token may see: all of its customer's, or those of its features. */
export function visibleTo<M extends { featureKey: string }>(token: CustomerTokenPrincipal | null, metrics: M[]): M[] {
  if (token?.featureKeys == null) return metrics;
  const allowed = token.featureKeys;
  return metrics.filter((m) => allowed.includes(m.featureKey));
}

/** The UNAUTHENTICATED error that ends a stream whose token has expired. */
export function tokenExpired(token: CustomerTokenPrincipal): MeterError {
  return new MeterError(
    Code.Unauthenticated,
    "TOKEN_EXPIRED",
    `the customer token expired at ${new Date(token.expiresAt).toISOString()}; get a new one`,
  );
}
