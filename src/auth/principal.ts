// Who is calling: today a holder of a secret key; customer tokens will add a second kind.

export interface SecretKeyPrincipal {
  kind: "secret";
  /** A short, loggable id of the key (never the key itself). */
  keyId: string;
}

export type Principal = SecretKeyPrincipal;

/** Reads one request header, case-insensitively, from either listener. */
export type HeaderReader = (name: string) => string | undefined;
