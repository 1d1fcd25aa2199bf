// Secret keys: the credential of trusted callers, sent as `authorization: Bearer <key>` or `x-api-key: <key>`.
import { hash, timingSafeEqual } from "node:crypto";
import type { HeaderReader, Principal } from "./principal.js";

// One-shot hash: about half the cost of createHash().update().digest(), and it runs on every call.
function sha256(value: string): Buffer {
  return hash("sha256", value, "buffer");
}

/** A short, loggable id of a key: the first 8 hex characters of its SHA-256. */
export function keyIdOf(key: string): string {
  return sha256(key).toString("hex").slice(0, 8);
}

/** The secret key a request presents, or null when it presents none. */
export function presentedKey(header: HeaderReader): string | null {
  const authorization = header("authorization")?.trim();
  if (authorization !== undefined) {
    const match = /^Bearer\s+(\S+)$/i.exec(authorization);
    if (match?.[1] !== undefined) return match[1];
  }
  const apiKey = header("x-api-key")?.trim();
  return apiKey === undefined || apiKey === "" ? null : apiKey;
}

export class SecretKeyAuthenticator {
  // Only digests are kept: comparing fixed-length hashes keeps the comparison constant-time
  // whatever the length of the presented key.
  private readonly keys: ReadonlyArray<{ digest: Buffer; keyId: string }>;

  constructor(keys: string[]) {
    this.keys = keys.map((key) => {
      if (key.trim() === "") throw new Error("a secret key must not be empty");
      const digest = sha256(key);
      return { digest, keyId: digest.toString("hex").slice(0, 8) };
    });
  }

  /** The caller, or null when the request carries no key or a key that is not accepted. */
  authenticate(header: HeaderReader): Principal | null {
    const key = presentedKey(header);
    if (key === null) return null;
    const digest = sha256(key);
    let found: string | null = null;
    // No early exit: every configured key is compared.
    for (const candidate of this.keys) {
      if (timingSafeEqual(candidate.digest, digest) && found === null) found = candidate.keyId;
    }
    return found === null ? null : { kind: "secret", keyId: found };
  }
}
