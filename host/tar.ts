/** Just enough ustar to move one file in and out of a box through the engine's archive API. */

const BLOCK = 512;

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

/** A tar archive holding one regular file `name` (a plain file name, at most 100 bytes). */
export function packFile(name: string, data: Buffer, mode = 0o644, mtime = Date.now()): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error('file name longer than 100 bytes');
  const header = Buffer.alloc(BLOCK, 0);
  header.write(name, 0, 100, 'utf8');
  header.write(octal(mode & 0o7777, 8), 100, 'ascii');
  header.write(octal(0, 8), 108, 'ascii');
  header.write(octal(0, 8), 116, 'ascii');
  header.write(octal(data.length, 12), 124, 'ascii');
  header.write(octal(Math.floor(mtime / 1000), 12), 136, 'ascii');
  header.write('        ', 148, 'ascii');
  header.write('0', 156, 'ascii');
  header.write('ustar\0', 257, 'ascii');
  header.write('00', 263, 'ascii');
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(octal(sum, 7) + ' ', 148, 'ascii');
  const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
  return Buffer.concat([header, data, Buffer.alloc(pad + 2 * BLOCK, 0)]);
}

export interface TarEntry {
  name: string;
  type: 'file' | 'directory' | 'other';
  data: Buffer;
}

/** Reads the first entry of an archive, skipping pax/GNU extension headers. */
export function firstEntry(archive: Buffer): TarEntry | undefined {
  let offset = 0;
  while (offset + BLOCK <= archive.length) {
    const header = archive.subarray(offset, offset + BLOCK);
    if (header.every((b) => b === 0)) return undefined;
    const name = header.toString('utf8', 0, 100).replace(/\0.*$/s, '');
    const size = parseInt(header.toString('ascii', 124, 136).replace(/\0.*$/s, '').trim() || '0', 8);
    const flag = String.fromCharCode(header[156] ?? 0);
    const start = offset + BLOCK;
    offset = start + Math.ceil(size / BLOCK) * BLOCK;
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') continue;
    const type = flag === '0' || flag === '\0' ? 'file' : flag === '5' ? 'directory' : 'other';
    return { name, type, data: Buffer.from(archive.subarray(start, start + size)) };
  }
  return undefined;
}

/** The 512-byte ustar header of one regular file of `size` bytes (streamed after it). */
export function fileHeader(name: string, size: number, mode = 0o644, mtime = Date.now()): Buffer {
  return header(name, size, mode, mtime);
}

function header(name: string, size: number, mode: number, mtime: number): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error('file name longer than 100 bytes');
  const h = Buffer.alloc(BLOCK, 0);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(mode & 0o7777, 8), 100, 'ascii');
  h.write(octal(0, 8), 108, 'ascii');
  h.write(octal(0, 8), 116, 'ascii');
  h.write(octal(size, 12), 124, 'ascii');
  h.write(octal(Math.floor(mtime / 1000), 12), 136, 'ascii');
  h.write('        ', 148, 'ascii');
  h.write('0', 156, 'ascii');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(octal(sum, 7) + ' ', 148, 'ascii');
  return h;
}

/** What follows a file's `size` bytes to end the archive: padding to a block, then two zero blocks. */
export function archiveTrailer(size: number): Buffer {
  return Buffer.alloc(((BLOCK - (size % BLOCK)) % BLOCK) + 2 * BLOCK, 0);
}

/** Parses one header block: name, size and type flag; undefined for the zero block that ends an archive. */
export function parseHeader(block: Buffer): { name: string; size: number; flag: string } | undefined {
  if (block.every((b) => b === 0)) return undefined;
  const name = block.toString('utf8', 0, 100).replace(/\0.*$/s, '');
  const raw = block.subarray(124, 136);
  // GNU base-256 for sizes of 8 GiB and more.
  const size = (raw[0]! & 0x80) !== 0 ? Number(raw.subarray(4).readBigUInt64BE()) : parseInt(raw.toString('ascii').replace(/\0.*$/s, '').trim() || '0', 8);
  return { name, size, flag: String.fromCharCode(block[156] ?? 0) };
}

export const TAR_BLOCK = BLOCK;
