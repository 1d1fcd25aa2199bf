// Given meterd serving /ui/ and two other local sites (one allowed by METERD_CORS_ORIGINS, one not),
// when real Chromium opens the usage page with a customer token, then it shows a bar per feature,
// a click tracks one unit and the bar moves live (WatchUsage) without a reload, 80% marks the bar;
// each feature that resets shows its usage per day of the period (QueryUsage); the page from the site
// that is not allowed cannot call meterd; a token for one customer cannot read
// or change another's usage, track a negative amount or call SetUsage; an expired token is refused.
import { existsSync } from "node:fs";
import { copyFile, mkdir } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/meterd/v1/auth_pb.js";
import { CatalogService } from "../../gen/meterd/v1/catalog_pb.js";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { CustomerTokens } from "../../src/auth/customer-tokens.js";
import type { Server } from "../../src/server.js";
import { auth, makeDataDir, removeDir, ROOT, startMeterd } from "../server/harness.js";
import { launchChromium, RUN_BROWSER_TESTS } from "./chromium.js";

const SIGNING = { id: "browser-tests", secret: "browser-tests-signing-secret-0123456789" };
const OUTPUT_DIR = path.join(ROOT, "test-results", "browser");
const DOCS_SCREENSHOT = path.join(ROOT, "docs", "usage-page.png");

/** A site on its own origin whose page embeds meterd's usage page script. */
interface Site {
  origin: string;
  server: http.Server;
}

async function startSite(meterdUrl: () => string): Promise<Site> {
  const server = http.createServer((req, res) => {
    if (req.url !== "/embed.html") {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Acme app</title>
<link rel="stylesheet" href="${meterdUrl()}/ui/style.css">
<script defer src="${meterdUrl()}/ui/app.js"></script></head>
<body><main id="meterd-usage"></main></body></html>`);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe.runIf(RUN_BROWSER_TESTS)("the usage page in Chromium", () => {
  let browser: Browser;
  let meterd: Server;
  let dataDir: string;
  let allowed: Site;
  let notAllowed: Site;
  let tokens: Client<typeof AuthService>;
  let metering: Client<typeof MeteringService>;
  let catalog: Client<typeof CatalogService>;
  const contexts: BrowserContext[] = [];
  const meterdUrl = (): string => `http://127.0.0.1:${meterd.httpPort}`;

  beforeAll(async () => {
    browser = await launchChromium();
    allowed = await startSite(meterdUrl);
    notAllowed = await startSite(meterdUrl);
    dataDir = await makeDataDir();
    meterd = await startMeterd(dataDir, {
      METERD_CORS_ORIGINS: allowed.origin,
      METERD_TOKEN_KEYS: `${SIGNING.id}:${SIGNING.secret}`,
    });
    const transport = createConnectTransport({ baseUrl: meterdUrl(), httpVersion: "1.1" });
    tokens = createClient(AuthService, transport);
    metering = createClient(MeteringService, transport);
    catalog = createClient(CatalogService, transport);
    await mkdir(OUTPUT_DIR, { recursive: true });
  });

  afterEach(async () => {
    for (const context of contexts.splice(0)) await context.close();
  });

  afterAll(async () => {
    await browser?.close();
    for (const site of [allowed, notAllowed]) site?.server.close();
    await meterd?.close(1000);
    await removeDir(dataDir);
  });

  async function mint(customerId: string): Promise<string> {
    return (await tokens.createCustomerToken({ customerId }, { headers: auth })).token;
  }

  async function open(url: string): Promise<Page> {
    const context = await browser.newContext({ viewport: { width: 860, height: 900 }, reducedMotion: "reduce" });
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(url);
    return page;
  }

  const card = (page: Page, feature: string) => page.locator(`li.metric[data-feature="${feature}"]`);
  const bar = (page: Page, feature: string) => card(page, feature).getByRole("progressbar");
  const valueNow = (page: Page, feature: string) => bar(page, feature).getAttribute("aria-valuenow");
  const status = (page: Page) => page.getByRole("status").textContent();

  async function consumed(customerId: string, featureKey = "api_calls"): Promise<number> {
    const { metrics } = await metering.getMetrics({ customerId, featureKey }, { headers: auth });
    return metrics[0]?.consumed ?? 0;
  }

  it("shows a bar per feature for the token in the URL fragment, then drops the token from the address", async () => {
    const page = await open(`${meterdUrl()}/ui/#token=${await mint("browser-bars")}`);
    await expect.poll(() => page.locator("li.metric").count()).toBe(4);
    expect(await page.locator("li.metric h2").allTextContents()).toEqual(["API calls", "Storage", "Seats", "AI tokens"]);
    const apiBar = bar(page, "api_calls");
    expect(await apiBar.getAttribute("aria-valuemax")).toBe("1000");
    expect(await apiBar.getAttribute("aria-valuenow")).toBe("0");
    expect(await apiBar.getAttribute("aria-valuetext")).toBe("0 calls of 1,000 used (0%)");
    expect(await apiBar.getAttribute("aria-labelledby")).toBe("meterd-api_calls-title");
    expect(await card(page, "api_calls").locator("dd").allTextContents()).toEqual(["0 calls · 0%", "1,000", "1,000", expect.stringMatching(/^(in \d+ days?|today)$/)]);
    expect(await card(page, "seats").locator("dd").last().textContent()).toBe("never");
    expect(await bar(page, "ai_tokens").isHidden()).toBe(true); // unlimited: no bar
    expect(await page.getByText("Customer browser-bars", { exact: false }).count()).toBe(1);
    expect(await status(page)).toMatch(/^Live/);
    expect(page.url()).toBe(`${meterdUrl()}/ui/`);
  });

  it("tracks one unit on a click, and the bar moves without a reload; at 80% the bar is marked", async () => {
    const customerId = "browser-click";
    const page = await open(`${meterdUrl()}/ui/#token=${await mint(customerId)}`);
    await expect.poll(() => valueNow(page, "api_calls")).toBe("0");
    await page.evaluate(() => ((window as unknown as { sameDocument: boolean }).sameDocument = true));

    await page.getByRole("button", { name: "Use 1 call of API calls" }).click();
    await expect.poll(() => valueNow(page, "api_calls")).toBe("1");
    expect(await consumed(customerId)).toBe(1);
    expect(await status(page)).toBe("Counted 1 call of API calls.");
    expect(await card(page, "api_calls").locator("dd").first().textContent()).toBe("1 call · 0%");

    // Usage recorded elsewhere (here: a server with a secret key) reaches the page live too.
    await metering.track({ customerId, featureKey: "api_calls", amount: 798 }, { headers: auth });
    await expect.poll(() => valueNow(page, "api_calls")).toBe("799");
    expect(await card(page, "api_calls").getAttribute("class")).toBe("metric");
    expect(await card(page, "api_calls").locator(".badge").isHidden()).toBe(true);

    // The daily chart of the period (QueryUsage, in the browser's time zone) counts the same 799.
    const daily = card(page, "api_calls").locator("svg.daily");
    await expect.poll(() => daily.getAttribute("data-total"), { timeout: 10_000 }).toBe("799");
    const { metrics } = await metering.getMetrics({ customerId, featureKey: "api_calls" }, { headers: auth });
    const periodDays = Math.round((Number(metrics[0]!.periodEnd!.seconds) - Number(metrics[0]!.periodStart!.seconds)) / 86_400);
    expect(Number(await daily.getAttribute("data-days"))).toBeGreaterThanOrEqual(periodDays);
    expect(await daily.getAttribute("aria-label")).toMatch(/^Usage per day this period: 799 calls over \d+ days/);
    expect(await daily.locator("rect.day").count()).toBeGreaterThan(0);
    expect(await card(page, "seats").locator("svg.daily").isHidden()).toBe(true); // seats never reset: no period

    await page.getByRole("button", { name: "Use 1 call of API calls" }).click();
    await expect.poll(() => valueNow(page, "api_calls")).toBe("800");
    await expect.poll(() => card(page, "api_calls").getAttribute("class")).toBe("metric warn");
    expect(await card(page, "api_calls").locator(".badge").textContent()).toBe("80% reached");
    expect(await bar(page, "api_calls").getAttribute("aria-valuetext")).toBe("800 calls of 1,000 used (80%)");
    const width = await card(page, "api_calls").locator(".fill").evaluate((el) => (el as HTMLElement).style.width);
    expect(width).toBe("80%");
    // The same document all along: nothing reloaded.
    expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);

    await page.screenshot({ path: path.join(OUTPUT_DIR, "usage-page.png"), fullPage: true });
  });

  it("works from an allowed origin: another site embedding the page script", async () => {
    const customerId = "browser-allowed";
    const page = await open(`${allowed.origin}/embed.html#token=${await mint(customerId)}`);
    await expect.poll(() => page.locator("li.metric").count()).toBe(4);
    await page.getByRole("button", { name: "Use 1 GB of Storage" }).click();
    await expect.poll(() => valueNow(page, "storage_gb")).toBe("1");
    expect(await consumed(customerId, "storage_gb")).toBe(1);
  });

  it("cannot call the service from an origin that is not allowed", async () => {
    const customerId = "browser-not-allowed";
    const token = await mint(customerId);
    const page = await open(`${notAllowed.origin}/embed.html#token=${token}`);
    await expect.poll(() => status(page)).toMatch(/^Connection lost/);
    expect(await page.locator("li.metric").count()).toBe(0);

    // Not through the page's client, nor by hand: the preflight gets no CORS answer.
    const outcome = await page.evaluate(
      async ({ url, token, customerId }) => {
        try {
          const res = await fetch(`${url}/meterd.v1.MeteringService/Track`, {
            method: "POST",
            headers: { "content-type": "application/json", "connect-protocol-version": "1", authorization: `Bearer ${token}` },
            body: JSON.stringify({ customerId, featureKey: "api_calls", amount: 1 }),
          });
          return `status ${res.status}`;
        } catch (err) {
          return String(err);
        }
      },
      { url: meterdUrl(), token, customerId },
    );
    expect(outcome).toBe("TypeError: Failed to fetch");
    expect(await consumed(customerId)).toBe(0);
  });

  it("a token for customer A cannot read or track for B, track a negative amount, or call SetUsage", async () => {
    const [a, b] = ["browser-a", "browser-b"];
    await metering.track({ customerId: b, featureKey: "api_calls", amount: 7 }, { headers: auth });
    await metering.track({ customerId: a, featureKey: "seats", amount: 2 }, { headers: auth });
    const page = await open(`${meterdUrl()}/ui/#token=${await mint(a)}`);
    await expect.poll(() => page.locator("li.metric").count()).toBe(4);

    // What a script on the page could try with the token it holds.
    const attempts = await page.evaluate(async () => {
      const token = sessionStorage.getItem("meterd.customerToken");
      const call = async (method: string, body: object) => {
        const res = await fetch(`/meterd.v1.MeteringService/${method}`, {
          method: "POST",
          headers: { "content-type": "application/json", "connect-protocol-version": "1", authorization: `Bearer ${token}` },
          body: JSON.stringify(body),
        });
        const json = (await res.json()) as { code?: string; details?: Array<{ debug?: { reason?: string } }> };
        return [res.status, json.code ?? "ok", json.details?.[0]?.debug?.reason ?? ""];
      };
      return {
        readB: await call("GetMetrics", { customerId: "browser-b" }),
        watchB: await call("Check", { customerId: "browser-b", featureKey: "api_calls" }),
        trackB: await call("Track", { customerId: "browser-b", featureKey: "api_calls", amount: 1 }),
        negative: await call("Track", { customerId: "browser-a", featureKey: "seats", amount: -1 }),
        setUsage: await call("SetUsage", { customerId: "browser-a", featureKey: "seats", used: 0 }),
        own: await call("Check", { customerId: "browser-a", featureKey: "api_calls" }),
      };
    });
    expect(attempts).toEqual({
      readB: [403, "permission_denied", "CUSTOMER_NOT_ALLOWED"],
      watchB: [403, "permission_denied", "CUSTOMER_NOT_ALLOWED"],
      trackB: [403, "permission_denied", "CUSTOMER_NOT_ALLOWED"],
      negative: [403, "permission_denied", "NEGATIVE_AMOUNT_FORBIDDEN"],
      setUsage: [403, "permission_denied", "SECRET_KEY_REQUIRED"],
      own: [200, "ok", ""],
    });
    expect(await consumed(b)).toBe(7);
    expect(await consumed(a, "seats")).toBe(2);
  });

  it("refuses an expired token and asks for a new one, which can be pasted in", async () => {
    const customerId = "browser-expired";
    const expired = new CustomerTokens([{ id: SIGNING.id, secret: Buffer.from(SIGNING.secret) }], () => Date.now() - 3_600_000).mint({
      customerId,
      featureKeys: [],
      ttlSeconds: 900,
    }).token;
    const page = await open(`${meterdUrl()}/ui/#token=${expired}`);
    await expect.poll(() => status(page)).toMatch(/^the customer token expired at .*Paste a new customer token\.$/);
    expect(await page.locator("li.metric").count()).toBe(0);

    await page.getByLabel("Customer token").fill(await mint(customerId));
    await page.getByRole("button", { name: "Show usage" }).click();
    await expect.poll(() => page.locator("li.metric").count()).toBe(4);
    expect(await page.getByLabel("Customer token").isHidden()).toBe(true);
  });

  it("makes the README's screenshot", async () => {
    const customerId = "acme-co";
    await catalog.topUpCredits({ customerId, amount: 50, idempotencyKey: "docs-topup" }, { headers: auth });
    for (const [featureKey, amount] of [
      ["api_calls", 823],
      ["storage_gb", 41.5],
      ["seats", 4],
      ["ai_tokens", 12_000],
    ] as const) {
      await metering.track({ customerId, featureKey, amount }, { headers: auth });
    }
    const page = await open(`${meterdUrl()}/ui/#token=${await mint(customerId)}`);
    await expect.poll(() => valueNow(page, "api_calls")).toBe("823");
    const shot = path.join(OUTPUT_DIR, "usage-page-docs.png");
    await page.screenshot({ path: shot, fullPage: true });
    // The copy in docs/ is kept in git: it is replaced only on request, so test runs leave it alone.
    if (!existsSync(DOCS_SCREENSHOT) || process.env["METERD_UPDATE_SCREENSHOTS"] === "1") {
      await mkdir(path.dirname(DOCS_SCREENSHOT), { recursive: true });
      await copyFile(shot, DOCS_SCREENSHOT);
    }
  });
});
