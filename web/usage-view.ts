// One card per feature: a bar (consumed out of the limit), the figures, the threshold badge, and a
// button that uses one unit. Cards are made once and updated in place, so the bar moves smoothly.
import type { Metric, UsageBucket } from "../gen/meterd/v1/metering_pb.js";
import { drawDailyChart } from "./daily-chart.js";
import { formatNumber, quantity, resetsText, thresholdLevel } from "./format.js";

interface Card {
  root: HTMLLIElement;
  title: HTMLHeadingElement;
  product: HTMLSpanElement;
  badge: HTMLSpanElement;
  bar: HTMLDivElement;
  fill: HTMLDivElement;
  used: HTMLElement;
  limit: HTMLElement;
  remaining: HTMLElement;
  resets: HTMLElement;
  daily: SVGSVGElement;
  unit: string;
  button: HTMLButtonElement;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className = "", text = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className !== "") node.className = className;
  if (text !== "") node.textContent = text;
  return node;
}

function figure(list: HTMLDListElement, label: string): HTMLElement {
  const item = el("div");
  item.append(el("dt", "", label));
  const value = el("dd");
  item.append(value);
  list.append(item);
  return value;
}

export class UsageView {
  private readonly cards = new Map<string, Card>();

  constructor(
    private readonly list: HTMLUListElement,
    private readonly onUse: (metric: Metric, button: HTMLButtonElement) => void,
  ) {}

  clear(): void {
    this.cards.clear();
    this.list.replaceChildren();
  }

  /** Shows these metrics; features not in the list keep their last state. */
  update(metrics: readonly Metric[]): void {
    for (const metric of metrics) {
      const card = this.cards.get(metric.featureKey) ?? this.create(metric.featureKey);
      this.render(card, metric);
    }
  }

  private create(featureKey: string): Card {
    const id = `meterd-${featureKey}`;
    const root = el("li", "metric");
    root.dataset["feature"] = featureKey;
    const head = el("div", "metric-head");
    const title = el("h2");
    title.id = `${id}-title`;
    const product = el("span", "product");
    const badge = el("span", "badge");
    badge.hidden = true;
    head.append(title, product, badge);

    const bar = el("div", "bar");
    bar.setAttribute("role", "progressbar");
    bar.setAttribute("aria-labelledby", title.id);
    bar.setAttribute("aria-valuemin", "0");
    const fill = el("div", "fill");
    bar.append(fill);

    const figures = el("dl", "figures");
    const used = figure(figures, "Used");
    const limit = figure(figures, "Limit");
    const remaining = figure(figures, "Remaining");
    const resets = figure(figures, "Resets");

    // Shown once QueryUsage has answered for the current period (features that reset have one).
    const daily = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    daily.setAttribute("class", "daily");
    daily.setAttribute("role", "img");
    daily.style.display = "none";

    const button = el("button", "use");
    button.type = "button";
    const card: Card = { root, title, product, badge, bar, fill, used, limit, remaining, resets, daily, unit: "", button };
    root.append(head, bar, figures, daily, button);
    this.list.append(root);
    this.cards.set(featureKey, card);
    return card;
  }

  /** The feature's usage per day of its current period (QueryUsage's buckets). */
  showDaily(featureKey: string, buckets: readonly UsageBucket[]): void {
    const card = this.cards.get(featureKey);
    if (card === undefined) return;
    drawDailyChart(card.daily, buckets, card.unit);
    card.daily.style.display = buckets.length > 0 ? "" : "none";
  }

  private render(card: Card, m: Metric): void {
    const level = thresholdLevel(m);
    card.unit = m.unit;
    card.title.textContent = m.featureTitle || m.featureKey;
    card.product.textContent = m.productName;
    card.root.classList.toggle("warn", level >= 80 && level < 100);
    card.root.classList.toggle("full", level >= 100);
    card.root.classList.toggle("unlimited", m.unlimited);
    card.badge.hidden = level === 0;
    card.badge.textContent = level >= 100 ? (m.overage > 0 ? "Over the limit" : "Limit reached") : `${level}% reached`;

    const percent = m.unlimited ? 0 : Math.min(100, Math.max(0, m.percentageUsed));
    card.fill.style.width = `${percent}%`;
    card.bar.hidden = m.unlimited;
    card.bar.setAttribute("aria-valuemax", String(m.unlimited ? 0 : m.limit));
    card.bar.setAttribute("aria-valuenow", String(m.consumed));
    card.bar.setAttribute(
      "aria-valuetext",
      m.unlimited
        ? `${quantity(m.consumed, m.unit)} used, no limit`
        : `${quantity(m.consumed, m.unit)} of ${formatNumber(m.limit)} used (${formatNumber(Math.floor(m.percentageUsed))}%)`,
    );

    card.used.textContent = m.unlimited
      ? quantity(m.consumed, m.unit)
      : `${quantity(m.consumed, m.unit)} · ${formatNumber(Math.floor(m.percentageUsed))}%`;
    card.limit.textContent = m.unlimited ? "none" : formatNumber(m.limit);
    // A credit-funded feature without a unit limit: what is left is the wallet.
    card.remaining.textContent = !m.unlimited
      ? formatNumber(m.remaining)
      : m.creditBalance !== 0
        ? `${formatNumber(m.creditBalance)} credits`
        : "—";
    card.resets.textContent = resetsText(m);
    if (m.periodEnd !== undefined) card.resets.title = new Date(Number(m.periodEnd.seconds) * 1000).toUTCString();

    card.button.textContent = `Use 1 ${m.unit || "unit"}`;
    card.button.setAttribute("aria-label", `Use 1 ${m.unit || "unit"} of ${card.title.textContent}`);
    card.button.onclick = () => this.onUse(m, card.button);
  }
}
