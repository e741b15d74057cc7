// The serve process's log: pino's JSON lines on standard output, through
// pino's own asynchronous destination. Lines are gathered up to minLength
// bytes before a write, and flushed at least once a second so a quiet
// webhook's lines are not held back; pino flushes what is left when the
// process exits, so every admission answered has been logged.

import pino, { type Logger } from 'pino';

/** Bytes gathered before a write, as pino's docs on asynchronous logging show. */
const WRITE_AT_BYTES = 4096;
const FLUSH_EVERY_MS = 1000;

export function createLogger(level: string): Logger {
  const logger = pino(
    { level, base: { name: 'prestop-injector' } },
    pino.destination({ dest: 1, minLength: WRITE_AT_BYTES, sync: false }),
  );
  setInterval(() => logger.flush(), FLUSH_EVERY_MS).unref();
  return logger;
}
