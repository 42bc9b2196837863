/** JSON-lines logs. Every line of a delivery carries its partner, flow, file, sequence and delivery id. */
import { createRequire } from 'node:module';
import { isatty } from 'node:tty';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

/**
 * What the command line says (--log-level, --pretty/--no-pretty), set once before a command runs; it
 * wins over the configuration's log_level and over a command's own choice (the operations commands
 * show only errors at a terminal).
 */
export const logOptions: { level?: string; pretty?: boolean } = {};

export function createLogger(level: string, destination: number = 1): Logger {
  const pretty = logOptions.pretty ?? isatty(destination);
  const options = { level: logOptions.level ?? level, base: { service: 'inboxd' }, timestamp: pino.stdTimeFunctions.isoTime };
  if (pretty) return pino(options, prettyStream(destination));
  // Level names, not numbers: `"level":"warn"` reads, and greps, as what it is.
  return pino({ ...options, formatters: { level: (label) => ({ level: label }) } }, pino.destination({ dest: destination, sync: true }));
}

/** pino-pretty in this thread, synchronously (a log line is out before the process exits); loaded only when used. */
function prettyStream(destination: number): DestinationStream {
  const pretty = createRequire(import.meta.url)('pino-pretty') as (o: object) => DestinationStream;
  return pretty({ destination, sync: true, colorize: isatty(destination), translateTime: 'SYS:standard', ignore: 'pid,hostname,service' });
}
