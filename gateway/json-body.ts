import express, { type RequestHandler } from 'express';
import { BoxdError } from '../core/errors.ts';

/**
 * JSON request bodies for the control API. A body sent with `Content-Type: application/json` (or
 * `+json`) is parsed; a body with any other or no Content-Type is refused with 415 naming the
 * header — never silently ignored (a create would otherwise get a random name and defaults).
 * File uploads (`…/files`) take raw bytes and are left alone.
 */
export function jsonBody(limit: string): RequestHandler {
  const json = express.json({ limit, strict: false });
  return (req, res, next) => {
    if (req.path.endsWith('/files')) return next();
    const len = req.headers['content-length'];
    const hasBody = req.headers['transfer-encoding'] !== undefined || (len !== undefined && len !== '0');
    if (!hasBody) return next();
    if (req.is(['application/json', 'application/*+json'])) return json(req, res, next);
    const sent = req.headers['content-type'] ? `Content-Type: ${req.headers['content-type']}` : 'no Content-Type';
    throw new BoxdError('UNSUPPORTED_MEDIA_TYPE', `request bodies are JSON: send the header "Content-Type: application/json" (got ${sent})`);
  };
}
