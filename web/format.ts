// How numbers, units and periods read on the page.
import type { Metric } from "../gen/meterd/v1/metering_pb.js";

const numbers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 6 });

export const formatNumber = (value: number): string => numbers.format(value);

/** "1 call", "2 calls", "3 GB": lower-case word units take an "s". */
export function quantity(value: number, unit: string): string {
  if (unit === "") return formatNumber(value);
  const plural = value !== 1 && /^[a-z]+$/.test(unit) && !unit.endsWith("s") ? `${unit}s` : unit;
  return `${formatNumber(value)} ${plural}`;
}

export function resetsText(metric: Metric): string {
  if (metric.periodEnd === undefined) return "never";
  if (metric.resetsInDays <= 0) return "today";
  return metric.resetsInDays === 1 ? "in 1 day" : `in ${metric.resetsInDays} days`;
}

/** The highest threshold reached: one the plan reports, or 80% and 100% by the page's own measure. */
export function thresholdLevel(metric: Metric): number {
  if (metric.unlimited) return 0;
  const own = metric.percentageUsed >= 100 ? 100 : metric.percentageUsed >= 80 ? 80 : 0;
  return Math.max(own, ...metric.thresholdsReached);
}
