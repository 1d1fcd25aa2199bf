// Decides, from the headers alone and before any body byte is read, who is calling and whether the
// call may go on: a secret key may call anything; a customer token only the procedures a browser
// needs, at its rate. Body-dependent rules (whose customer, which feature) are the handlers' part:
// see src/rpc/customer-scope.ts.
import { Code } from "@connectrpc/connect";
import { MeterError } from "../metering/errors.js";
import { type CustomerTokens, looksLikeCustomerToken } from "./customer-tokens.js";
import type { HeaderReader, Principal } from "./principal.js";
import type { TokenBucketLimiter } from "./rate-limit.js";
import { presentedKey, type SecretKeyAuthenticator } from "./secret-keys.js";

export interface AuthenticatorOptions {
  secretKeys: SecretKeyAuthenticator;
  tokens: CustomerTokens;
  /** Per-token rate limit; null: none. */
  limiter: TokenBucketLimiter | null;
  /** The procedures ("/pkg.Service/Method") a customer token may call. */
  customerProcedures: ReadonlySet<string>;
}

const methodName = (procedure: string): string => procedure.split("/").filter((s) => s !== "").join(".");

export class Authenticator {
  private readonly allowedList: string;

  constructor(private readonly options: AuthenticatorOptions) {
    this.allowedList = [...options.customerProcedures].map((p) => p.split("/").pop()).join(", ");
  }

  /** The caller of `procedure`; throws UNAUTHENTICATED, PERMISSION_DENIED or RESOURCE_EXHAUSTED. */
  authenticate(header: HeaderReader, procedure: string): Principal {
    const credential = presentedKey(header);
    if (credential === null) {
      throw new MeterError(
        Code.Unauthenticated,
        "CREDENTIAL_MISSING",
        "missing credential: send a secret key as Authorization: Bearer, or as X-Api-Key (browsers: a customer token as Authorization: Bearer)",
      );
    }
    const secret = this.options.secretKeys.authenticate(header);
    if (secret !== null) return secret;
    if (!looksLikeCustomerToken(credential)) {
      throw new MeterError(Code.Unauthenticated, "CREDENTIAL_INVALID", "invalid credential: the key is not accepted");
    }

    const verified = this.options.tokens.verify(credential);
    if (!verified.ok) throw new MeterError(Code.Unauthenticated, verified.reason, verified.message);
    const principal = verified.principal;

    const admission = this.options.limiter?.take(principal.tokenId) ?? { ok: true };
    if (!admission.ok) {
      const { perSecond, burst } = this.options.limiter!.rate;
      const error = new MeterError(
        Code.ResourceExhausted,
        "TOKEN_RATE_LIMITED",
        `too many calls with this customer token (at most ${perSecond} per second, ${burst} at once): retry in ${admission.retryAfterMs} ms`,
        "",
        `retry after ${admission.retryAfterMs} ms`,
      );
      // Retry-After counts whole seconds; retry-after-ms is the precise hint.
      error.metadata.set("retry-after", String(Math.max(1, Math.ceil(admission.retryAfterMs / 1000))));
      error.metadata.set("retry-after-ms", String(admission.retryAfterMs));
      throw error;
    }

    if (!this.options.customerProcedures.has(procedure)) {
      throw new MeterError(
        Code.PermissionDenied,
        "SECRET_KEY_REQUIRED",
        `${methodName(procedure)} needs a secret key; a customer token may call only ${this.allowedList}`,
      );
    }
    return principal;
  }
}
