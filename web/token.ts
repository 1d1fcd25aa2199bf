// The customer token: from the URL fragment (#token=...), else from this tab's session storage.
// The fragment is never sent to a server; the page removes it from the address bar once read.

const STORAGE_KEY = "meterd.customerToken";

export interface TokenInfo {
  token: string;
  customerId: string;
  /** ms since the epoch. */
  expiresAt: number;
}

/** Reads the token's payload (it is signed, not encrypted); null when it is not a customer token. */
export function decodeToken(token: string): TokenInfo | null {
  const [prefix, payload] = token.split(".");
  if (prefix !== "ct1" || payload === undefined) return null;
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(json) as { cus?: unknown; exp?: unknown };
    if (typeof claims.cus !== "string" || typeof claims.exp !== "number") return null;
    return { token, customerId: claims.cus, expiresAt: claims.exp * 1000 };
  } catch {
    return null;
  }
}

export function takeTokenFromLocation(): string | null {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = params.get("token");
  if (token === null || token === "") return null;
  history.replaceState(null, "", location.pathname + location.search);
  return token;
}

export function rememberToken(token: string | null): void {
  try {
    if (token === null) sessionStorage.removeItem(STORAGE_KEY);
    else sessionStorage.setItem(STORAGE_KEY, token);
  } catch {
    // Storage may be disabled; the page then asks again after a reload.
  }
}

export function rememberedToken(): string | null {
  try {
    return sessionStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}
