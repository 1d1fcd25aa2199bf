// A small chart of a feature's usage per day of its current period, from QueryUsage: one column per
// day, as an inline SVG that scales with the card. Days ahead in the period are drawn empty, so the
// chart also shows how much of the period is left.
import type { UsageBucket } from "../gen/meterd/v1/metering_pb.js";
import { formatNumber, quantity } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const HEIGHT = 32;
const AHEAD_HEIGHT = 3;

/** Draws the buckets in `svg`, replacing what was there; `unit` names the amounts in the label. */
export function drawDailyChart(svg: SVGSVGElement, buckets: readonly UsageBucket[], unit: string, now = Date.now()): void {
  const values = buckets.map((b) => Number(b.value));
  const max = Math.max(0, ...values);
  const width = Math.max(1, buckets.length) * 4;
  svg.setAttribute("viewBox", `0 0 ${width} ${HEIGHT}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const columns = buckets.map((b, i) => {
    const start = Number(b.start?.seconds ?? 0n) * 1000;
    const value = values[i] ?? 0;
    const ahead = start > now;
    // Days ahead get a low stub, so that what is left of the period shows; a past day without usage, none.
    const height = ahead ? AHEAD_HEIGHT : max > 0 ? Math.max(value > 0 ? 1 : 0, (value / max) * HEIGHT) : 0;
    const rect = document.createElementNS(SVG, "rect");
    rect.setAttribute("x", String(i * 4 + 0.5));
    rect.setAttribute("width", "3");
    rect.setAttribute("y", String(HEIGHT - height));
    rect.setAttribute("height", String(height));
    rect.setAttribute("class", ahead ? "ahead" : "day");
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${new Date(start).toLocaleDateString(undefined, { month: "short", day: "numeric" })}: ${quantity(value, unit)}`;
    rect.append(title);
    return rect;
  });
  // A baseline, so that a period with no usage yet still shows its days.
  const base = document.createElementNS(SVG, "line");
  base.setAttribute("x1", "0");
  base.setAttribute("x2", String(width));
  base.setAttribute("y1", String(HEIGHT - 0.5));
  base.setAttribute("y2", String(HEIGHT - 0.5));
  base.setAttribute("class", "base");
  svg.replaceChildren(base, ...columns);
  const busiest = values.length > 0 ? values.indexOf(max) : -1;
  svg.setAttribute(
    "aria-label",
    max > 0 && busiest >= 0
      ? `Usage per day this period: ${quantity(values.reduce((a, v) => a + v, 0), unit)} over ${buckets.length} days, most on day ${busiest + 1} (${formatNumber(max)})`
      : `Usage per day this period: none yet over ${buckets.length} days`,
  );
  svg.dataset["days"] = String(buckets.length);
  svg.dataset["total"] = String(values.reduce((a, v) => a + v, 0));
}
