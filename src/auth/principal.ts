// Who is calling: a holder of a secret key (a trusted service), or a browser with a customer token.

export interface SecretKeyPrincipal {
  kind: "secret";
  /** A short, loggable id of the key (never the key itself). */
  keyId: string;
}

/** A browser acting for one customer: see customer-tokens.ts. */
export interface CustomerTokenPrincipal {
  kind: "customer";
  /** The id of the signing key that signed the token. */
  keyId: string;
  /** The token's own id: loggable, and the unit of the per-token rate limit. */
  tokenId: string;
  customerId: string;
  /** The features the token may use; null: every feature. */
  featureKeys: readonly string[] | null;
  /** ms since the epoch. */
  expiresAt: number;
}

export type Principal = SecretKeyPrincipal | CustomerTokenPrincipal;

/** Reads one request header, case-insensitively, from either listener. */
export type HeaderReader = (name: string) => string | undefined;
