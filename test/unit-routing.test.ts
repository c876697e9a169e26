import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canonicalHost, resolveTarget } from '../gateway/routing.ts';

describe('resolveTarget', () => {
  const base = 'boxd.localhost';
  const table: [string | undefined, ReturnType<typeof resolveTarget>][] = [
    ['try-1.boxd.localhost:8080', { kind: 'box', box: 'try-1', port: null }],
    ['TRY-1.BOXD.LOCALHOST', { kind: 'box', box: 'try-1', port: null }],
    ['try-1.boxd.localhost.', { kind: 'box', box: 'try-1', port: null }],
    ['try-1.boxd.localhost.:8080', { kind: 'box', box: 'try-1', port: null }],
    ['3000.try-1.boxd.localhost:8080', { kind: 'box', box: 'try-1', port: 3000 }],
    ['3000.boxd.localhost', { kind: 'box', box: '3000', port: null }],
    ['boxd.localhost:8080', { kind: 'api' }],
    ['api.boxd.localhost:8080', { kind: 'api' }],
    ['localhost:8080', { kind: 'api' }],
    ['127.0.0.1:8080', { kind: 'api' }],
    ['evilboxd.localhost', { kind: 'api' }],
    [undefined, { kind: 'api' }],
    ['99999.try-1.boxd.localhost', { kind: 'invalid', reason: 'port out of range' }],
    ['0.try-1.boxd.localhost', { kind: 'invalid', reason: 'port out of range' }],
    ['a.b.try-1.boxd.localhost', { kind: 'invalid', reason: 'not a box host name' }],
    ['x.try-1.boxd.localhost', { kind: 'invalid', reason: 'not a box host name' }],
    ['-bad.boxd.localhost', { kind: 'invalid', reason: 'not a box host name' }],
    ['..boxd.localhost', { kind: 'invalid', reason: 'not a box host name' }],
    ['under_score.boxd.localhost', { kind: 'invalid', reason: 'malformed Host header' }],
    ['try-1.boxd.localhost:80a', { kind: 'invalid', reason: 'malformed Host header' }],
    ['try 1.boxd.localhost', { kind: 'invalid', reason: 'malformed Host header' }],
    [`${'a'.repeat(64)}.boxd.localhost`, { kind: 'invalid', reason: 'not a box host name' }],
  ];
  for (const [host, want] of table) {
    it(`${JSON.stringify(host)} → ${want.kind}`, () => assert.deepEqual(resolveTarget(host, base), want));
  }

  it('canonicalises case, port and trailing dot', () => {
    assert.equal(canonicalHost('A.B.:99'), 'a.b');
    assert.equal(canonicalHost('[::1]:8080'), '[::1]');
    assert.equal(canonicalHost(''), undefined);
  });
});
