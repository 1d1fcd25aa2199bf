// Customer tokens: what a browser holds instead of a secret key. A token is
//   ct1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(signing key, "ct1.<payload>"))>
// with the payload {kid, jti, cus, ftr?, iat, exp} (times in seconds). It is signed, not encrypted:
// anyone holding it can read the customer id, which is why it carries nothing secret.
// The first signing key signs; every configured key verifies, so keys rotate with two valid at once.
import { createHmac, hkdfSync, randomBytes, timingSafeEqual } from "node:crypto";
import type { CustomerTokenPrincipal } from "./principal.js";
import { keyIdOf } from "./secret-keys.js";

export interface SigningKey {
  /** Named in each token it signs (`kid`), so that the verifier knows which key to use. */
  id: string;
  secret: Buffer;
}

export interface MintInput {
  customerId: string;
  /** Empty: every feature. */
  featureKeys: readonly string[];
  ttlSeconds: number;
}

export interface MintedToken {
  token: string;
  tokenId: string;
  /** ms since the epoch. */
  expiresAt: number;
}

export type Verification =
  | { ok: true; principal: CustomerTokenPrincipal }
  | { ok: false; reason: "TOKEN_INVALID" | "TOKEN_EXPIRED"; message: string };

const PREFIX = "ct1";
const MAX_TOKEN_LENGTH = 8192;
const BASE64URL = /^[A-Za-z0-9_-]+$/;
export const SIGNING_KEY_ID = /^[A-Za-z0-9_-]{1,32}$/;
export const MIN_SIGNING_SECRET_LENGTH = 32;

/** True for a string shaped like a customer token (it may still be forged or expired). */
export function looksLikeCustomerToken(credential: string): boolean {
  return credential.startsWith(`${PREFIX}.`);
}

/**
 * One signing key per secret key, derived with HKDF: used when METERD_TOKEN_KEYS is not set, so that
 * every replica sharing the secret keys (or the development key) verifies the same tokens.
 */
export function deriveSigningKeys(secretKeys: readonly string[]): SigningKey[] {
  return secretKeys.map((key) => ({
    id: `sk-${keyIdOf(key)}`,
    secret: Buffer.from(hkdfSync("sha256", key, "", "meterd customer token signing key v1", 32)),
  }));
}

function sign(secret: Buffer, signedPart: string): Buffer {
  return createHmac("sha256", secret).update(signedPart, "utf8").digest();
}

interface Payload {
  kid: string;
  jti: string;
  cus: string;
  ftr?: string[];
  iat: number;
  exp: number;
}

function parsePayload(encoded: string): Payload | null {
  if (!BASE64URL.test(encoded)) return null;
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(encoded, "base64url").toString("utf8"));
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const p = value as Record<string, unknown>;
  const isString = (v: unknown): v is string => typeof v === "string" && v !== "";
  if (!isString(p["kid"]) || !isString(p["jti"]) || !isString(p["cus"])) return null;
  if (!Number.isSafeInteger(p["iat"]) || !Number.isSafeInteger(p["exp"])) return null;
  const ftr = p["ftr"];
  if (ftr !== undefined && !(Array.isArray(ftr) && ftr.length > 0 && ftr.every(isString))) return null;
  return value as Payload;
}

export class CustomerTokens {
  private readonly keys: Map<string, Buffer>;
  private readonly signer: SigningKey;

  constructor(
    keys: readonly SigningKey[],
    private readonly now: () => number = Date.now,
  ) {
    const first = keys[0];
    if (first === undefined) throw new Error("customer tokens need at least one signing key");
    this.signer = first;
    this.keys = new Map();
    for (const key of keys) {
      if (!SIGNING_KEY_ID.test(key.id)) throw new Error(`signing key id "${key.id}" must match ${SIGNING_KEY_ID}`);
      if (this.keys.has(key.id)) throw new Error(`signing key id "${key.id}" is used twice`);
      this.keys.set(key.id, key.secret);
    }
  }

  /** The id of the key that signs new tokens. */
  get signingKeyId(): string {
    return this.signer.id;
  }

  mint(input: MintInput): MintedToken {
    const iat = Math.floor(this.now() / 1000);
    const payload: Payload = {
      kid: this.signer.id,
      jti: randomBytes(12).toString("base64url"),
      cus: input.customerId,
      ...(input.featureKeys.length > 0 ? { ftr: [...input.featureKeys] } : {}),
      iat,
      exp: iat + input.ttlSeconds,
    };
    const signedPart = `${PREFIX}.${Buffer.from(JSON.stringify(payload), "utf8").toString("base64url")}`;
    const token = `${signedPart}.${sign(this.signer.secret, signedPart).toString("base64url")}`;
    return { token, tokenId: payload.jti, expiresAt: payload.exp * 1000 };
  }

  verify(token: string): Verification {
    const invalid = (why: string): Verification => ({ ok: false, reason: "TOKEN_INVALID", message: `invalid customer token: ${why}` });
    if (token.length > MAX_TOKEN_LENGTH) return invalid("too long");
    const parts = token.split(".");
    const [prefix, encoded, signature] = parts;
    if (parts.length !== 3 || prefix !== PREFIX || encoded === undefined || signature === undefined) {
      return invalid("not a ct1 token");
    }
    const payload = parsePayload(encoded);
    if (payload === null || !BASE64URL.test(signature)) return invalid("malformed");
    const secret = this.keys.get(payload.kid);
    if (secret === undefined) return invalid(`signed by key "${payload.kid}", which is not configured`);
    const expected = sign(secret, `${prefix}.${encoded}`);
    const presented = Buffer.from(signature, "base64url");
    if (presented.length !== expected.length || !timingSafeEqual(presented, expected)) return invalid("bad signature");
    // Checked only once the signature holds, so that a forged token is never reported as merely expired.
    if (payload.exp * 1000 <= this.now()) {
      return { ok: false, reason: "TOKEN_EXPIRED", message: `the customer token expired at ${new Date(payload.exp * 1000).toISOString()}; get a new one` };
    }
    return {
      ok: true,
      principal: {
        kind: "customer",
        keyId: payload.kid,
        tokenId: payload.jti,
        customerId: payload.cus,
        featureKeys: payload.ftr ?? null,
        expiresAt: payload.exp * 1000,
      },
    };
  }
}
