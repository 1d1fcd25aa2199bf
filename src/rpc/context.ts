// Per-request values shared by both listeners and the handlers. Kept in a file of its own so that
// listeners and services can import it without importing each other.
import { createContextKey } from "@connectrpc/connect";
import type { Principal } from "../auth/principal.js";

/** Set by the listener after authentication; null only on public methods such as health checks. */
export const principalKey = createContextKey<Principal | null>(null, { description: "caller" });
