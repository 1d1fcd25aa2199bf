// Progress of a long command, on stderr: cli-progress's bar on a terminal; on a file or a pipe (a log,
// CI, `2> reconcile.log`), the same figures as a plain line every PLAIN_EVERY_MS and at the end, so that
// a long run shows it is alive wherever its output goes. Both show the rate and the time left.
import cliProgress from "cli-progress";

const { SingleBar, Presets, Format } = cliProgress;

const PLAIN_EVERY_MS = 10_000;

/**
 * A bar for `label` counting `unit`; `fields` is more of the line with cli-progress placeholders (for
 * example "{differences} differences"), filled from the payload given to start() and increment().
 */
export function progressBar(label: string, unit: string, fields = "", stream: NodeJS.WriteStream = process.stderr): cliProgress.SingleBar {
  const tty = stream.isTTY === true;
  const more = fields === "" ? "" : ` | ${fields}`;
  const template = tty
    ? `${label} [{bar}] {value}/{total} ${unit}${more} | {rate} ${unit}/s | {eta_formatted} left`
    : `${label} {value}/{total} ${unit} ({percentage}%)${more} | {rate} ${unit}/s | {eta_formatted} left`;
  // cli-progress's own formatter, given the rate since the start (it has the ETA, not the rate).
  const format: cliProgress.GenericFormatter = (options, params, payload) => {
    const seconds = ((params.stopTime ?? Date.now()) - params.startTime) / 1000;
    const rate = seconds > 0 ? Math.round(params.value / seconds).toLocaleString("en-US") : "-";
    return Format.Formatter({ ...options, format: template }, params, { ...(payload as object), rate });
  };
  return new SingleBar({ format, stream, noTTYOutput: true, notTTYSchedule: PLAIN_EVERY_MS }, Presets.shades_classic);
}
