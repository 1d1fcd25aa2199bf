// meterd.v1.AuthService: mints customer tokens for browsers. Secret key only.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { AuthService } from "../../gen/meterd/v1/auth_pb.js";
import type { CustomerTokens } from "../auth/customer-tokens.js";
import type { Catalog } from "../catalog/catalog.js";
import { invalid } from "../metering/errors.js";
import { checkCustomerId } from "../metering/validate.js";
import { requireSecretKey } from "./customer-scope.js";

export const DEFAULT_TOKEN_TTL_SECONDS = 900;
export const MAX_TOKEN_TTL_SECONDS = 86_400;
const MAX_TOKEN_FEATURES = 50;

export function createAuthService(deps: { tokens: CustomerTokens; catalog: Catalog }): ServiceImpl<typeof AuthService> {
  const { tokens, catalog } = deps;
  return {
    createCustomerToken(req, ctx) {
      requireSecretKey(ctx, "CreateCustomerToken");
      checkCustomerId(req.customerId);
      const ttlSeconds = req.ttlSeconds ?? DEFAULT_TOKEN_TTL_SECONDS;
      if (ttlSeconds < 1 || ttlSeconds > MAX_TOKEN_TTL_SECONDS) {
        throw invalid("ttl_seconds", `must be from 1 to ${MAX_TOKEN_TTL_SECONDS} (24 hours)`, "TTL_OUT_OF_RANGE");
      }
      const featureKeys = [...new Set(req.featureKeys)];
      if (featureKeys.length > MAX_TOKEN_FEATURES) {
        throw invalid("feature_keys", `must name at most ${MAX_TOKEN_FEATURES} features`, "TOO_MANY_FEATURES");
      }
      req.featureKeys.forEach((key, i) => {
        if (catalog.feature(key) === undefined) {
          throw invalid(`feature_keys[${i}]`, `must name a known feature, "${key}" is not one`, "UNKNOWN_FEATURE");
        }
      });
      const minted = tokens.mint({ customerId: req.customerId, featureKeys, ttlSeconds });
      return { token: minted.token, tokenId: minted.tokenId, expiresAt: timestampFromMs(minted.expiresAt) };
    },
  };
}
