// JSON logs through pino, one line per event, to stdout.
import { pino, type Logger } from "pino";

export function createLogger(level: string): Logger {
  return pino({ level, base: { service: "meterd" } });
}
