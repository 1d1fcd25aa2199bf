// Figures, their floors and targets: the printed table, the Markdown table for the README, and
// bench/results/latest.json (an array of {name, value, unit, floor, ratio}, plus target, pass, disturbed).

export interface Figure {
  name: string;
  value: number;
  unit: string;
  /** The floor measured in the same run, in the same unit; null when the figure has none. */
  floor: number | null;
  /** What the floor is, e.g. "bare grpc-js echo". */
  floorName?: string;
  /** value / floor (for latency and CPU too: lower is better there). */
  ratio: number | null;
  /** The issue's target: on the ratio, e.g. { op: ">=", ratio: 0.65 }, or on the value itself, e.g. { op: "<=", value: 25 }. */
  target?: Target;
  note?: string;
  /** A phase behind the figure (its own or its floor's) stayed disturbed by other processes: not valid. */
  disturbed?: boolean;
}

export type Target = { op: ">=" | "<="; ratio: number } | { op: ">=" | "<="; value: number };

export function figure(f: Omit<Figure, "ratio">): Figure {
  const ratio = f.floor === null || !Number.isFinite(f.floor) || f.floor === 0 ? null : f.value / f.floor;
  return { ...f, ratio };
}

/** Whether the figure meets its target; null without one. A disturbed figure is judged all the same. */
export function passes(f: Figure): boolean | null {
  if (!f.target) return null;
  const [actual, wanted] = "ratio" in f.target ? [f.ratio, f.target.ratio] : [f.value, f.target.value];
  if (actual === null || !Number.isFinite(actual)) return false;
  return f.target.op === ">=" ? actual >= wanted : actual <= wanted;
}

/** "≥ 0.65" for a ratio, "≤ 25 µs/event" for a value. */
export function targetText(f: Figure): string {
  if (!f.target) return "";
  const op = f.target.op === ">=" ? "≥" : "≤";
  return "ratio" in f.target ? `${op} ${f.target.ratio}` : `${op} ${f.target.value} ${f.unit}`;
}

export function formatNumber(value: number, unit: string): string {
  if (!Number.isFinite(value)) return "n/a";
  if (unit === "ms" || unit === "ms/batch") return value < 10 ? value.toFixed(2) : value.toFixed(1);
  if (unit === "MiB") return value.toFixed(0);
  if (unit === "µs/call" || unit === "µs/event") return value < 100 ? value.toFixed(1) : value.toFixed(0);
  if (unit === "x") return value.toFixed(2);
  return Math.round(value).toLocaleString("en-US");
}

function cells(f: Figure): string[] {
  const pass = passes(f);
  return [
    f.name,
    f.value === Infinity && f.unit === "ms" ? `saturated${f.note ? ` (${f.note})` : ""}` : `${formatNumber(f.value, f.unit)} ${f.unit}`,
    f.floor === null ? "" : `${formatNumber(f.floor, f.unit)} ${f.unit}${f.floorName ? ` (${f.floorName})` : ""}`,
    f.ratio === null ? "" : Number.isFinite(f.ratio) ? f.ratio.toFixed(2) : "∞",
    targetText(f),
    f.disturbed ? `DISTURBED${pass === null ? "" : ` (${pass ? "pass" : "FAIL"})`}` : pass === null ? "" : pass ? "pass" : "FAIL",
  ];
}

const HEADER = ["figure", "value", "floor (same run)", "ratio", "target", "result"];

export function textTable(figures: Figure[]): string {
  const rows = [HEADER, ...figures.map(cells)];
  const widths = HEADER.map((_, c) => Math.max(...rows.map((r) => [...r[c]!].length)));
  const line = (r: string[]) => r.map((cell, c) => cell + " ".repeat(widths[c]! - [...cell].length)).join("  ").trimEnd();
  return [line(rows[0]!), widths.map((w) => "-".repeat(w)).join("  "), ...rows.slice(1).map(line)].join("\n");
}

export function markdownTable(figures: Figure[]): string {
  const rows = figures.map(cells);
  return [
    `| ${HEADER.join(" | ")} |`,
    `| ${HEADER.map((_, i) => (i === 0 ? "---" : i === 3 ? "---:" : "---")).join(" | ")} |`,
    ...rows.map((r) => `| ${r.map((c) => c.replace(/\|/g, "\\|")).join(" | ")} |`),
  ].join("\n");
}

export interface LatestEntry {
  name: string;
  value: number | null;
  unit: string;
  floor: number | null;
  ratio: number | null;
  /** As the table writes it ("≥ 0.65", "≤ 25 µs/event"), or null. */
  target: string | null;
  pass: boolean | null;
  disturbed: boolean;
}

/**
 * latest.json: issue 5's shape ({name, value, unit, floor, ratio}) and each figure's target, result and
 * whether it was disturbed; numbers rounded to what the table shows (a saturated latency is null).
 */
export function latestJson(figures: Figure[]): LatestEntry[] {
  const round = (v: number, unit: string): number | null => {
    if (!Number.isFinite(v)) return null;
    if (unit === "ms" || unit === "ms/batch" || unit === "µs/call" || unit === "µs/event" || unit === "x") return Math.round(v * 100) / 100;
    return Math.round(v);
  };
  return figures.map((f) => ({
    name: f.name,
    value: round(f.value, f.unit),
    unit: f.unit,
    floor: f.floor === null ? null : round(f.floor, f.unit),
    ratio: f.ratio === null || !Number.isFinite(f.ratio) ? null : Math.round(f.ratio * 1000) / 1000,
    target: f.target ? targetText(f) : null,
    pass: passes(f),
    disturbed: f.disturbed === true,
  }));
}
