import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../core/config.ts';
import { aptSource } from '../golden-images/definitions.ts';
import { firstEntry, packFile } from '../host/tar.ts';
import { parseBoxPath } from '../gateway/schemas.ts';
import { OutputBuffer } from '../host/runtime.ts';

describe('tar', () => {
  it('round-trips one file of any size', () => {
    for (const size of [0, 1, 511, 512, 513, 100_000]) {
      const data = Buffer.alloc(size, 'x');
      const entry = firstEntry(packFile('f.txt', data));
      assert.equal(entry?.name, 'f.txt');
      assert.equal(entry?.type, 'file');
      assert.ok(entry?.data.equals(data));
    }
  });
  it('refuses names longer than 100 bytes', () => assert.throws(() => packFile('n'.repeat(101), Buffer.alloc(0))));
});

describe('config', () => {
  it('has documented defaults', () => {
    const c = loadConfig({});
    assert.equal(c.BOXD_PORT, 8080);
    assert.equal(c.BOXD_BIND, '127.0.0.1');
    assert.equal(c.BOXD_BASE_DOMAIN, 'boxd.localhost');
    assert.equal(c.BOXD_IDLE_TIMEOUT_MS, 30_000);
    assert.equal(c.BOXD_OCI_RUNTIME, 'runc');
  });
  it('names the bad variable', () => {
    assert.throws(() => loadConfig({ BOXD_PORT: 'eighty' }), (e) => e instanceof ConfigError && /BOXD_PORT/.test(e.message));
    assert.throws(() => loadConfig({ REDIS_URL: 'not a url' }), (e) => e instanceof ConfigError && /REDIS_URL/.test(e.message));
  });
});

describe('box paths', () => {
  it('accepts absolute file paths and refuses the rest', () => {
    assert.equal(parseBoxPath('/a//b/c.txt'), '/a/b/c.txt');
    for (const bad of ['', 'rel/x', '/a/../b', '/', '/a/', '/x\0y', undefined, ['/a']]) assert.throws(() => parseBoxPath(bad));
  });
});

describe('OutputBuffer', () => {
  it('keeps at most its cap and says it truncated', () => {
    const b = new OutputBuffer(5);
    b.push(Buffer.from('abc'));
    b.push(Buffer.from('defg'));
    assert.equal(b.toBuffer().toString(), 'abcde');
    assert.equal(b.truncated, true);
  });
});

describe('apt source', () => {
  it('reads the mirror from this machine’s apt configuration', () => {
    const { suite, mirror } = aptSource();
    assert.ok(suite.length > 0);
    assert.match(mirror, /^https?:\/\//);
  });
});
