// The usage page: a customer's usage bars, live through WatchUsage, with a button per feature that
// tracks one unit. It talks to meterd with connect-web and the client generated in gen/, using a
// customer token (never a secret key). meterd serves it at /ui/; another site can embed it with
//   <main id="meterd-usage"></main>
//   <script defer src="https://meterd.example.com/ui/app.js"></script>
// (that site's origin must be in METERD_CORS_ORIGINS). data-api on the script overrides the address.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { MeteringService, type Metric, UsageWindow } from "../gen/meterd/v1/metering_pb.js";
import { Decision, DenyReason } from "../gen/meterd/v1/usage_pb.js";
import { decodeToken, rememberedToken, rememberToken, takeTokenFromLocation, type TokenInfo } from "./token.js";
import { quantity } from "./format.js";
import { UsageView } from "./usage-view.js";

const script = document.currentScript as HTMLScriptElement | null;
const apiUrl = script?.dataset["api"] ?? (script?.src ? new URL(script.src).origin : location.origin);

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className = "", text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className !== "") node.className = className;
  if (text !== "") node.textContent = text;
  return node;
}

/** A fresh idempotency key per click: a retried request is then never counted twice. */
function newKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `ui-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}

const denyText: Record<DenyReason, string> = {
  [DenyReason.UNSPECIFIED]: "denied",
  [DenyReason.LIMIT_REACHED]: "the limit is reached",
  [DenyReason.INSUFFICIENT_CREDITS]: "not enough credits",
  [DenyReason.NOT_ENTITLED]: "not in this plan",
};

function build(root: HTMLElement) {
  root.classList.add("meterd");
  const header = el("header");
  header.append(el("h1", "", "Usage"));
  const who = el("p", "who");
  header.append(who);

  const form = el("form", "token-form");
  const label = el("label", "", "Customer token");
  label.htmlFor = "meterd-token";
  const input = el("input");
  input.id = "meterd-token";
  input.type = "password";
  input.autocomplete = "off";
  input.spellcheck = false;
  input.placeholder = "starts with ct1.";
  const submit = el("button", "", "Show usage");
  submit.type = "submit";
  form.append(label, input, submit);

  const status = el("p", "status");
  status.setAttribute("role", "status");
  const list = el("ul", "metrics");
  list.setAttribute("aria-label", "Usage by feature");
  root.replaceChildren(header, form, status, list);
  return { who, form, input, status, list };
}

function main(): void {
  let root = document.getElementById("meterd-usage");
  if (root === null) {
    root = el("main");
    root.id = "meterd-usage";
    document.body.append(root);
  }
  const ui = build(root);
  const client = createClient(MeteringService, createConnectTransport({ baseUrl: apiUrl }));
  let session: { info: TokenInfo; stop: AbortController } | null = null;

  const setStatus = (text: string, kind: "info" | "live" | "error" = "info"): void => {
    ui.status.textContent = text;
    ui.status.classList.toggle("error", kind === "error");
    ui.status.classList.toggle("live", kind === "live");
  };
  const auth = (): { headers: Record<string, string> } => ({ headers: { authorization: `Bearer ${session?.info.token ?? ""}` } });

  const view = new UsageView(ui.list, (metric: Metric, button: HTMLButtonElement) => {
    if (session === null) return;
    const customerId = session.info.customerId;
    button.disabled = true;
    client
      .track({ customerId, featureKey: metric.featureKey, amount: 1, idempotencyKey: newKey() }, auth())
      .then((res) => {
        const what = `${quantity(1, metric.unit)} of ${metric.featureTitle || metric.featureKey}`;
        if (res.decision === Decision.DENIED) setStatus(`Not counted: ${denyText[res.denyReason]}.`, "error");
        else setStatus(`Counted ${what}.`);
      })
      .catch((err: unknown) => setStatus(`Could not track: ${ConnectError.from(err).rawMessage}`, "error"))
      .finally(() => (button.disabled = false));
  });

  // Daily charts: each feature that resets is asked for its days at most every DAILY_EVERY_MS, and again
  // after a change, so that a burst of usage costs one QueryUsage per feature, not one per event.
  const DAILY_EVERY_MS = 2000;
  const timeZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const daily = new Map<string, { last: number; timer: ReturnType<typeof setTimeout> | null }>();
  function refreshDaily(info: TokenInfo, metric: Metric, signal: AbortSignal): void {
    if (metric.periodStart === undefined || metric.periodEnd === undefined) return;
    const state = daily.get(metric.featureKey) ?? { last: 0, timer: null };
    daily.set(metric.featureKey, state);
    if (state.timer !== null) return;
    const ask = (): void => {
      state.timer = null;
      state.last = Date.now();
      client
        .queryUsage(
          { customerId: info.customerId, featureKeys: [metric.featureKey], from: metric.periodStart, to: metric.periodEnd, window: UsageWindow.DAY, timeZone },
          { ...auth(), signal },
        )
        .then((res) => view.showDaily(metric.featureKey, res.buckets))
        // The chart is extra: without it the bars still tell the usage.
        .catch(() => undefined);
    };
    state.timer = setTimeout(ask, Math.max(0, state.last + DAILY_EVERY_MS - Date.now()));
  }

  async function watch(info: TokenInfo, signal: AbortSignal): Promise<void> {
    for (let attempt = 0; !signal.aborted; attempt++) {
      let waitMs = Math.min(30_000, 1000 * 2 ** attempt);
      try {
        let first = true;
        for await (const res of client.watchUsage({ customerId: info.customerId }, { ...auth(), signal })) {
          view.update(res.metrics);
          for (const metric of res.metrics) refreshDaily(info, metric, signal);
          if (first) setStatus(ui.list.childElementCount === 0 ? "No features to show." : "Live: the bars move as usage is recorded.", "live");
          first = false;
          attempt = 0;
        }
      } catch (err) {
        if (signal.aborted) return;
        const error = ConnectError.from(err);
        if (error.code === Code.Unauthenticated || error.code === Code.PermissionDenied || error.code === Code.InvalidArgument) {
          setStatus(`${error.rawMessage}. Paste a new customer token.`, "error");
          ui.form.hidden = false;
          return;
        }
        const hint = Number(error.metadata.get("retry-after-ms"));
        if (hint > 0) waitMs = hint;
        setStatus(`Connection lost (${error.rawMessage}); retrying in ${Math.ceil(waitMs / 1000)} s…`, "error");
      }
      await new Promise((resolve) => setTimeout(resolve, waitMs));
    }
  }

  function start(token: string): void {
    session?.stop.abort();
    session = null;
    view.clear();
    for (const state of daily.values()) if (state.timer !== null) clearTimeout(state.timer);
    daily.clear();
    const info = decodeToken(token.trim());
    if (info === null) {
      setStatus("This is not a customer token (it starts with ct1.).", "error");
      return;
    }
    rememberToken(info.token);
    session = { info, stop: new AbortController() };
    const until = new Date(info.expiresAt).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
    ui.who.textContent = `Customer ${info.customerId} · token valid until ${until}`;
    ui.form.hidden = true;
    setStatus("Connecting…");
    void watch(info, session.stop.signal);
  }

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    start(ui.input.value);
    ui.input.value = "";
  });

  const token = takeTokenFromLocation() ?? rememberedToken();
  if (token === null) setStatus("Paste a customer token to see usage.");
  else start(token);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", main);
else main();
