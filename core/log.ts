import { pino, type Logger } from 'pino';

export type { Logger };

/** The root logger of a process; pass children (`log.child({ box })`) down. */
export function createLogger(level: string, name: string): Logger {
  return pino({ level, name, base: { pid: process.pid } });
}

/** A logger that writes nothing, for tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
