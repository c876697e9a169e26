/**
 * boxd's error family. Each error has a stable `code`; the HTTP status is chosen in one
 * place (gateway/errors.ts). Errors that cross BullMQ travel as `{ code, message }` and are
 * rebuilt with `fromWire`, so compare them by `code`, never with instanceof across processes.
 */
export class BoxdError extends Error {
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
  toWire(): WireError {
    return { code: this.code, message: this.message };
  }
}

export interface WireError {
  code: string;
  message: string;
}

export class BoxNotFoundError extends BoxdError {
  constructor(name: string) {
    super('BOX_NOT_FOUND', `box "${name}" does not exist`);
  }
}
export class BoxExistsError extends BoxdError {
  constructor(name: string) {
    super('BOX_EXISTS', `a box named "${name}" already exists`);
  }
}
export class BoxStateError extends BoxdError {
  constructor(name: string, state: string, wanted: string) {
    super('BOX_STATE', `box "${name}" is ${state}; cannot ${wanted}`);
  }
}
export class LimitError extends BoxdError {
  constructor(message: string) {
    super('LIMIT_EXCEEDED', message);
  }
}
export class ValidationError extends BoxdError {
  constructor(message: string) {
    super('INVALID_REQUEST', message);
  }
}
export class RuntimeError extends BoxdError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('RUNTIME_ERROR', message, options);
  }
}
export class TimeoutError extends BoxdError {
  constructor(message: string) {
    super('TIMEOUT', message);
  }
}
export class UnavailableError extends BoxdError {
  constructor(message: string) {
    super('UNAVAILABLE', message);
  }
}

/** No live host can take a box right now; `retryAfterS` is sent as Retry-After. */
export class NoCapacityError extends BoxdError {
  constructor(
    message: string,
    readonly retryAfterS = 10,
  ) {
    super('NO_CAPACITY', message);
  }
}

/** Rebuilds an error that crossed a process boundary. */
export function fromWire(wire: WireError): BoxdError {
  return new BoxdError(wire.code, wire.message);
}

/** Parses the `{code,message}` JSON a host job failed with, if it is one. */
export function parseWire(text: string | undefined): WireError | undefined {
  if (!text || !text.startsWith('{')) return undefined;
  try {
    const v = JSON.parse(text) as Partial<WireError>;
    if (typeof v.code === 'string' && typeof v.message === 'string') return { code: v.code, message: v.message };
  } catch {
    /* not ours */
  }
  return undefined;
}

/** Whether an error means Redis cannot be reached (ioredis gave up or the connection is closed). */
export function isRedisDown(e: unknown): boolean {
  const err = e as { name?: string; message?: string };
  return err?.name === 'MaxRetriesPerRequestError' || /Connection is closed|ECONNREFUSED|Stream isn't writeable|Command timed out/.test(err?.message ?? '');
}
