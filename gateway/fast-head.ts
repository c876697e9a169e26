/**
 * Byte-level HTTP/1.1 head parsing for the preview fast path (gateway/fastpath.ts): it reads the
 * few header lines the gateway acts on straight from the buffer and notes which lines to drop,
 * without building header objects or turning whole heads into strings. Anything it does not
 * fully understand is refused (null), and the caller hands the connection to Node's HTTP server,
 * which answers it the strict way (400 and friends).
 */

/** tchar (RFC 9110 §5.6.2): the bytes a header name may hold. */
const TCHAR = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") TCHAR[c.charCodeAt(0)] = 1;

export const CRLFCRLF = Buffer.from('\r\n\r\n');
const TOKEN_BYTES = Buffer.from('boxd_token');

export interface RequestHead {
  /** Bytes of the head, CRLFCRLF included. */
  size: number;
  method: string;
  /** Offset of the CR ending the request line. */
  lineEnd: number;
  host: string | undefined;
  /** -1: no Content-Length. */
  contentLength: number;
  chunked: boolean;
  /** The client asked to close after this request. */
  close: boolean;
  authorization: string | undefined;
  proxyAuthorization: string | undefined;
  /** X-Boxd-Token. */
  token: string | undefined;
  /** Cookie header values that carry a boxd_token cookie (their lines are in `drop`). */
  tokenCookies: string[] | undefined;
  /** Pairs of [start, end) of header lines (CRLF included) not to forward. */
  drop: number[] | undefined;
  /** Offsets of the Authorization and Proxy-Authorization lines, dropped when they carry a key. */
  authAt: number;
  proxyAuthAt: number;
  /** Needs the HTTP path: an upgrade, Expect, a token in the query, a Connection naming other headers. */
  unusual: boolean;
}

/** True when bytes [s, s + name.length) of `buf` spell `name` (lower-case letters and '-') in any case. */
function nameIs(buf: Buffer, s: number, len: number, name: string): boolean {
  if (len !== name.length) return false;
  for (let i = 0; i < len; i++) if ((buf[s + i]! | 0x20) !== name.charCodeAt(i)) return false;
  return true;
}

function startsWithName(buf: Buffer, s: number, len: number, prefix: string): boolean {
  if (len < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if ((buf[s + i]! | 0x20) !== prefix.charCodeAt(i)) return false;
  return true;
}

/** Digits only, at most 15 of them; -2 otherwise. */
function decimal(buf: Buffer, s: number, e: number): number {
  if (e <= s || e - s > 15) return -2;
  let n = 0;
  for (let i = s; i < e; i++) {
    const d = buf[i]! - 0x30;
    if (d < 0 || d > 9) return -2;
    n = n * 10 + d;
  }
  return n;
}

/** The value of one Connection header: 1 close, 0 keep-alive/empty, -1 names something else. */
function connectionOf(v: string): number {
  let close = 0;
  for (const t of v.toLowerCase().split(',')) {
    const x = t.trim();
    if (x === 'close') close = 1;
    else if (x !== 'keep-alive' && x !== '') return -1;
  }
  return close;
}

/**
 * Parses the request head ending at `size` (just after its CRLFCRLF). Null when it is not a plain
 * origin-form HTTP/1.1 head with valid lines and unambiguous framing (both Content-Length and
 * Transfer-Encoding, a repeated one, a coding other than chunked, a repeated Host, ...).
 */
export function parseRequestHead(buf: Buffer, size: number): RequestHead | null {
  const end = size - 2; // the CR of the final empty line
  let lineEnd = buf.indexOf(13, 0);
  if (lineEnd < 0 || lineEnd >= end) return null;
  // Request line: METHOD SP /target SP HTTP/1.1
  let sp = 0;
  while (sp < lineEnd && buf[sp]! >= 0x41 && buf[sp]! <= 0x5a) sp++;
  if (sp === 0 || buf[sp] !== 0x20 || buf[sp + 1] !== 0x2f) return null;
  const vs = lineEnd - 9;
  if (vs <= sp + 1 || buf.toString('latin1', vs, lineEnd) !== ' HTTP/1.1') return null;
  for (let i = sp + 1; i < vs; i++) {
    const c = buf[i]!;
    if (c <= 0x20 || c === 0x7f) return null;
  }
  const method = buf.toString('latin1', 0, sp);
  if (method === 'CONNECT') return null;
  const h: RequestHead = {
    size, method, lineEnd, host: undefined, contentLength: -1, chunked: false, close: false,
    authorization: undefined, proxyAuthorization: undefined, token: undefined, tokenCookies: undefined,
    drop: undefined, authAt: -1, proxyAuthAt: -1,
    unusual: buf.indexOf(TOKEN_BYTES, sp + 1) >= 0 && buf.indexOf(TOKEN_BYTES, sp + 1) < vs,
  };
  let hosts = 0;
  let te = 0;
  let auths = 0;
  let pos = lineEnd + 2;
  while (pos < end) {
    const ls = pos;
    // Name: tchars up to the colon.
    let i = ls;
    while (TCHAR[buf[i]!]) i++;
    if (i === ls || buf[i] !== 0x3a) return null;
    const nameLen = i - ls;
    // Value: no CR/LF/NUL/controls inside; the line ends with CRLF.
    let vs2 = i + 1;
    let e = vs2;
    for (;;) {
      const c = buf[e]!;
      if (c === 13) break;
      if ((c < 0x20 && c !== 0x09) || c === 0x7f) return null;
      e++;
    }
    if (buf[e + 1] !== 10) return null;
    pos = e + 2;
    let ve = e;
    while (vs2 < ve && (buf[vs2] === 0x20 || buf[vs2] === 0x09)) vs2++;
    while (ve > vs2 && (buf[ve - 1] === 0x20 || buf[ve - 1] === 0x09)) ve--;
    switch (buf[ls]! | 0x20) {
      case 0x68: // h
        if (nameIs(buf, ls, nameLen, 'host')) {
          hosts++;
          h.host = buf.toString('latin1', vs2, ve);
        }
        break;
      case 0x63: // c
        if (nameIs(buf, ls, nameLen, 'content-length')) {
          if (h.contentLength !== -1) return null;
          h.contentLength = decimal(buf, vs2, ve);
          if (h.contentLength < 0) return null;
        } else if (nameIs(buf, ls, nameLen, 'connection')) {
          const c = connectionOf(buf.toString('latin1', vs2, ve));
          if (c < 0) h.unusual = true;
          if (c === 1) h.close = true;
          (h.drop ??= []).push(ls, pos);
        } else if (nameIs(buf, ls, nameLen, 'cookie')) {
          const at = buf.indexOf(TOKEN_BYTES, vs2);
          if (at >= 0 && at < ve) {
            (h.tokenCookies ??= []).push(buf.toString('latin1', vs2, ve));
            (h.drop ??= []).push(ls, pos);
          }
        }
        break;
      case 0x74: // t
        if (nameIs(buf, ls, nameLen, 'transfer-encoding')) {
          te++;
          if (buf.toString('latin1', vs2, ve).toLowerCase() !== 'chunked') return null;
          h.chunked = true;
        } else if (nameIs(buf, ls, nameLen, 'te') || nameIs(buf, ls, nameLen, 'trailer')) (h.drop ??= []).push(ls, pos);
        break;
      case 0x61: // a
        if (nameIs(buf, ls, nameLen, 'authorization')) {
          auths++;
          h.authorization = buf.toString('latin1', vs2, ve);
          h.authAt = ls;
        }
        break;
      case 0x70: // p
        if (nameIs(buf, ls, nameLen, 'proxy-authorization')) {
          auths++;
          h.proxyAuthorization = buf.toString('latin1', vs2, ve);
          h.proxyAuthAt = ls;
        } else if (nameIs(buf, ls, nameLen, 'proxy-connection')) (h.drop ??= []).push(ls, pos);
        break;
      case 0x6b: // k
        if (nameIs(buf, ls, nameLen, 'keep-alive')) (h.drop ??= []).push(ls, pos);
        break;
      case 0x75: // u
        if (nameIs(buf, ls, nameLen, 'upgrade')) h.unusual = true;
        break;
      case 0x65: // e
        if (nameIs(buf, ls, nameLen, 'expect')) h.unusual = true;
        break;
      case 0x66: // f
        if (nameIs(buf, ls, nameLen, 'forwarded')) (h.drop ??= []).push(ls, pos);
        break;
      case 0x78: // x
        if (startsWithName(buf, ls, nameLen, 'x-forwarded-') || nameIs(buf, ls, nameLen, 'x-real-ip')) (h.drop ??= []).push(ls, pos);
        else if (nameIs(buf, ls, nameLen, 'x-boxd-token')) {
          if (h.token !== undefined) return null;
          h.token = buf.toString('latin1', vs2, ve);
          (h.drop ??= []).push(ls, pos);
        }
        break;
    }
  }
  if (hosts !== 1 || te > 1 || auths > 2 || (h.chunked && h.contentLength !== -1)) return null;
  return h;
}

export interface ResponseHead {
  status: number;
  /** -1: none. */
  contentLength: number;
  chunked: boolean;
  /** The box closes after this response (Connection: close, HTTP/1.0, or a body read until close). */
  close: boolean;
  untilClose: boolean;
  setCookie: boolean;
}

const HTTP1 = Buffer.from('HTTP/1.');

/** Whether the comma-separated list in bytes [s, e) holds the token `close` (any case). */
function hasCloseToken(buf: Buffer, s: number, e: number): boolean {
  let i = s;
  while (i < e) {
    while (i < e && (buf[i] === 0x20 || buf[i] === 0x09 || buf[i] === 0x2c)) i++;
    const t = i;
    while (i < e && buf[i] !== 0x2c) i++;
    let te = i;
    while (te > t && (buf[te - 1] === 0x20 || buf[te - 1] === 0x09)) te--;
    if (te - t === 5 && nameIs(buf, t, 5, 'close')) return true;
  }
  return false;
}

/** The status line and the framing of a response head ending at `size`; null when malformed. */
export function parseResponseHead(buf: Buffer, size: number): ResponseHead | null {
  const end = size - 2;
  if (size < 16 || buf.compare(HTTP1, 0, 7, 0, 7) !== 0 || buf[8] !== 0x20) return null;
  const minor = buf[7]! - 0x30;
  const status = decimal(buf, 9, 12);
  if ((minor !== 0 && minor !== 1) || status < 100 || (buf[12] !== 0x20 && buf[12] !== 13)) return null;
  const r: ResponseHead = { status, contentLength: -1, chunked: false, close: minor === 0, untilClose: false, setCookie: false };
  let pos = buf.indexOf(13, 12) + 2;
  while (pos < end) {
    const ls = pos;
    const e = buf.indexOf(13, ls);
    if (e < 0 || e >= end + 1 || buf[e + 1] !== 10) return null;
    pos = e + 2;
    const colon = buf.indexOf(0x3a, ls);
    if (colon < 0 || colon > e) continue;
    const nameLen = colon - ls;
    const c0 = buf[ls]! | 0x20;
    if (c0 !== 0x63 && c0 !== 0x74 && c0 !== 0x73) continue; // content-length, connection, transfer-encoding, set-cookie
    let vs = colon + 1;
    let ve = e;
    while (vs < ve && (buf[vs] === 0x20 || buf[vs] === 0x09)) vs++;
    while (ve > vs && (buf[ve - 1] === 0x20 || buf[ve - 1] === 0x09)) ve--;
    if (nameIs(buf, ls, nameLen, 'content-length')) {
      const n = decimal(buf, vs, ve);
      if (n < 0 || (r.contentLength !== -1 && r.contentLength !== n)) return null;
      r.contentLength = n;
    } else if (nameIs(buf, ls, nameLen, 'transfer-encoding')) {
      // chunked is the final coding or the body runs until close.
      if (buf.toString('latin1', vs, ve).toLowerCase().trimEnd().endsWith('chunked')) r.chunked = true;
      else r.untilClose = true;
    } else if (nameIs(buf, ls, nameLen, 'connection')) {
      if (hasCloseToken(buf, vs, ve)) r.close = true;
    } else if (nameIs(buf, ls, nameLen, 'set-cookie')) r.setCookie = true;
  }
  if (r.chunked) r.contentLength = -1;
  if (r.untilClose || (!r.chunked && r.contentLength === -1)) r.close = true;
  return r;
}

const SIZE = 0, EXT = 1, SIZE_LF = 2, DATA = 3, DATA_CR = 4, DATA_LF = 5, TRAILER = 6, TRAILER_LINE = 7, TRAILER_LF = 8, END_LF = 9;
const HEX = new Int8Array(256).fill(-1);
for (let i = 0; i < 16; i++) HEX['0123456789abcdef'.charCodeAt(i)] = HEX['0123456789ABCDEF'.charCodeAt(i)] = i;

/** Finds the end of a chunked body fed in pieces, on bytes. Strict: CRLF line ends, hex sizes. */
export class ChunkedEnd {
  private state = SIZE;
  private size = 0;
  private digits = 0;
  private left = 0;
  private line = 0;
  done = false;
  bad = false;

  /** How many bytes of `buf` belong to the body: all of them unless it ends inside (or is malformed). */
  push(buf: Buffer): number {
    let i = 0;
    const n = buf.length;
    while (i < n) {
      if (this.state === DATA) {
        const k = Math.min(this.left, n - i);
        i += k;
        this.left -= k;
        if (this.left === 0) this.state = DATA_CR;
        continue;
      }
      const c = buf[i++]!;
      switch (this.state) {
        case SIZE: {
          const d = HEX[c]!;
          if (d >= 0 && this.digits < 13) {
            this.size = this.size * 16 + d;
            this.digits++;
          } else if (this.digits && (c === 0x3b || c === 0x20 || c === 0x09)) {
            this.state = EXT;
            this.line = 0;
          } else if (this.digits && c === 13) this.state = SIZE_LF;
          else return this.fail(i);
          break;
        }
        case EXT:
          if (c === 13) this.state = SIZE_LF;
          else if (c === 10 || ++this.line > 4096) return this.fail(i);
          break;
        case SIZE_LF:
          if (c !== 10) return this.fail(i);
          if (this.size === 0) this.state = TRAILER;
          else {
            this.left = this.size;
            this.state = DATA;
          }
          this.size = this.digits = 0;
          break;
        case DATA_CR:
          if (c !== 13) return this.fail(i);
          this.state = DATA_LF;
          break;
        case DATA_LF:
          if (c !== 10) return this.fail(i);
          this.state = SIZE;
          break;
        case TRAILER:
          if (c === 13) this.state = END_LF;
          else {
            this.state = TRAILER_LINE;
            this.line = 0;
          }
          break;
        case TRAILER_LINE:
          if (c === 13) this.state = TRAILER_LF;
          else if (c === 10 || ++this.line > 4096) return this.fail(i);
          break;
        case TRAILER_LF:
          if (c !== 10) return this.fail(i);
          this.state = TRAILER;
          break;
        case END_LF:
          if (c !== 10) return this.fail(i);
          this.done = true;
          return i;
      }
    }
    return i;
  }

  private fail(i: number): number {
    this.bad = true;
    return i;
  }
}
