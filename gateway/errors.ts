import type { ErrorRequestHandler, RequestHandler } from 'express';
import { BoxdError, isRedisDown } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';

/** The one place an error code becomes an HTTP status. */
const STATUS = {
  INVALID_REQUEST: 400,
  INVALID_JSON: 400,
  IMAGE_NOT_FOUND: 400,
  GOLDEN_NOT_FOUND: 400,
  INVALID_HOST: 400,
  UNAUTHORIZED: 401,
  TOKEN_REQUIRED: 401,
  FORBIDDEN: 403,
  IMAGE_NOT_ALLOWED: 403,
  TOKEN_INVALID: 403,
  NO_PORTS: 404,
  PORT_NOT_DECLARED: 404,
  NO_WEBSOCKET: 404,
  BOX_NOT_FOUND: 404,
  NOT_FOUND: 404,
  FILE_NOT_FOUND: 404,
  SNAPSHOT_NOT_FOUND: 404,
  HOOK_NOT_FOUND: 404,
  TASK_NOT_FOUND: 404,
  ACCOUNT_NOT_FOUND: 404,
  KEY_NOT_FOUND: 404,
  BOX_EXISTS: 409,
  SNAPSHOT_EXISTS: 409,
  GOLDEN_EXISTS: 409,
  BOX_STATE: 409,
  BOX_BUSY: 409,
  DUPLICATE_DELIVERY: 409,
  PAYLOAD_TOO_LARGE: 413,
  FILE_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  LIMIT_EXCEEDED: 429,
  NOT_IMPLEMENTED: 501,
  NOT_SUPPORTED: 501,
  RUNTIME_ERROR: 502,
  // The host went away while it ran an exec: not re-run, outcome unknown.
  EXEC_LOST: 502,
  HOST_LOST: 503,
  UPSTREAM_UNAVAILABLE: 502,
  UNAVAILABLE: 503,
  NO_CAPACITY: 503,
  NO_ROUTE: 503,
  BLOB_EXPIRED: 503,
  TIMEOUT: 504,
  UPSTREAM_TIMEOUT: 504,
} satisfies Record<string, number>;

/** Every error code the API answers (INTERNAL is the 500 of anything unexpected). */
export type ErrorCode = keyof typeof STATUS | 'INTERNAL';

export function statusOf(code: string): number {
  return (STATUS as Record<string, number>)[code] ?? 500;
}

interface BodyParserError {
  type?: string;
  status?: number;
  message?: string;
}

/** Maps anything thrown in a route to `{ error: { code, message } }`. Never leaks stacks. */
export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    let e: BoxdError;
    const parser = err as BodyParserError;
    if (err instanceof BoxdError) e = err;
    else if (parser?.type === 'entity.parse.failed') e = new BoxdError('INVALID_JSON', `request body is not valid JSON: ${parser.message}`);
    else if (parser?.type === 'entity.too.large') e = new BoxdError('PAYLOAD_TOO_LARGE', 'request body is too large');
    else if (parser?.type === 'encoding.unsupported' || parser?.type === 'charset.unsupported') e = new BoxdError('UNSUPPORTED_MEDIA_TYPE', parser.message ?? 'unsupported encoding');
    else if (parser?.status && parser.status >= 400 && parser.status < 500) e = new BoxdError('INVALID_REQUEST', parser.message ?? 'bad request');
    else if (isRedisDown(err)) e = new BoxdError('UNAVAILABLE', 'boxd cannot reach its state store (Redis) right now');
    else {
      log.error({ err, method: req.method, url: req.originalUrl }, 'unhandled error');
      e = new BoxdError('INTERNAL', 'internal error');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const status = statusOf(e.code);
    if (status === 503) res.setHeader('Retry-After', String((e as { retryAfterS?: number }).retryAfterS ?? 1));
    res.status(status).json({ error: { code: e.code, message: e.message } });
  };
}

export const notFound: RequestHandler = (req, res) => {
  res.status(404).json({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.path}` } });
};
