/** JSON-lines logs. Every line of a delivery carries its partner, flow, file, sequence and delivery id. */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, destination: number = 1): Logger {
  return pino({ level, base: { service: 'inboxd' }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: destination, sync: true }));
}
