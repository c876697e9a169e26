import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { BoxdError } from '../core/errors.ts';
import type { BoxSpec, Runtime } from '../host/runtime.ts';

export interface ContractSetup {
  runtime: Runtime;
  /** An image with sh, echo, cat, sleep, ls, rm. */
  image: string;
  /** Removes everything the suite created. */
  cleanup(): Promise<void>;
}

const codeOf = (e: unknown) => (e instanceof BoxdError ? e.code : String(e));

/** One behaviour suite, run against every Runtime implementation (fake for speed, Docker for truth). */
export function runtimeContract(label: string, setup: () => Promise<ContractSetup>): void {
  describe(`Runtime contract: ${label}`, () => {
    let s: ContractSetup;
    const run = Math.random().toString(36).slice(2, 8);
    const spec = (name: string, over: Partial<BoxSpec> = {}): BoxSpec => ({
      name: `ct-${run}-${name}`,
      image: s.image,
      ports: [8080],
      env: { GREETING: 'hello' },
      labels: { 'boxd.managed': 'true', 'boxd.instance': `ct-${run}`, 'boxd.box': name },
      cpus: 1,
      memoryMb: 256,
      pidsLimit: 256,
      ...over,
    });
    before(async () => {
      s = await setup();
    });
    after(async () => {
      await s.cleanup();
    });

    it('creates a running box with its ports published, idempotently', async () => {
      const a = await s.runtime.create(spec('create'));
      assert.equal(a.state, 'running');
      assert.ok(a.ports[8080]! > 0, 'port 8080 is published');
      const again = await s.runtime.create(spec('create'));
      assert.equal(again.id, a.id);
      assert.equal((await s.runtime.list({ 'boxd.instance': `ct-${run}`, 'boxd.box': 'create' })).length, 1);
    });

    it('fails with IMAGE_NOT_FOUND for a missing image', async () => {
      await assert.rejects(s.runtime.create(spec('noimage', { image: 'boxd-missing/none:0' })), (e) => codeOf(e) === 'IMAGE_NOT_FOUND');
    });

    it('execs with exit codes, stdin, env and streamed output', async () => {
      const box = await s.runtime.create(spec('exec'));
      const hi = await s.runtime.exec(box.id, { cmd: ['echo', 'hi', 'there'] });
      assert.equal(hi.exitCode, 0);
      assert.equal(hi.stdout.toString(), 'hi there\n');
      const fail = await s.runtime.exec(box.id, { cmd: ['sh', '-c', 'exit 3'] });
      assert.equal(fail.exitCode, 3);
      const cat = await s.runtime.exec(box.id, { cmd: ['cat'], stdin: Buffer.from('from stdin') });
      assert.equal(cat.stdout.toString(), 'from stdin');
      const chunks: string[] = [];
      const streamed = await s.runtime.exec(box.id, { cmd: ['echo', 'streamed'], onOutput: (_s, d) => void chunks.push(d.toString()) });
      assert.equal(chunks.join(''), streamed.stdout.toString());
      const missing = await s.runtime.exec(box.id, { cmd: ['no-such-command-x'] });
      assert.notEqual(missing.exitCode, 0);
      const spaced = await s.runtime.exec(box.id, { cmd: ['echo', 'a  b', '$HOME', "'q'"] });
      assert.equal(spaced.stdout.toString(), "a  b $HOME 'q'\n");
    });

    it('stops a command at its timeout', async () => {
      const box = await s.runtime.create(spec('timeout'));
      const started = Date.now();
      const r = await s.runtime.exec(box.id, { cmd: ['sleep', '20'], timeoutMs: 300 });
      assert.equal(r.timedOut, true);
      assert.ok(Date.now() - started < 15_000, 'returned long before the command would have ended');
    });

    it('writes and reads files, with clear errors for missing files and folders', async () => {
      const box = await s.runtime.create(spec('files'));
      await s.runtime.putFile(box.id, '/tmp/deep/er/file.txt', Buffer.from('content ✓'));
      assert.equal((await s.runtime.getFile(box.id, '/tmp/deep/er/file.txt')).toString(), 'content ✓');
      const big = Buffer.alloc(300_000, 7);
      await s.runtime.putFile(box.id, '/tmp/big.bin', big);
      assert.ok((await s.runtime.getFile(box.id, '/tmp/big.bin')).equals(big));
      await assert.rejects(s.runtime.getFile(box.id, '/tmp/nothing-here'), (e) => codeOf(e) === 'FILE_NOT_FOUND');
      await assert.rejects(s.runtime.getFile(box.id, '/tmp/deep'), (e) => codeOf(e) === 'INVALID_REQUEST');
    });

    it('suspends and resumes, idempotently, keeping files', async () => {
      const box = await s.runtime.create(spec('suspend'));
      await s.runtime.putFile(box.id, '/tmp/kept', Buffer.from('yes'));
      await s.runtime.suspend(box.id);
      await s.runtime.suspend(box.id);
      assert.equal((await s.runtime.inspect(box.id))?.state, 'paused');
      await s.runtime.resume(box.id);
      await s.runtime.resume(box.id);
      assert.equal((await s.runtime.inspect(box.id))?.state, 'running');
      assert.equal((await s.runtime.exec(box.id, { cmd: ['cat', '/tmp/kept'] })).exitCode, 0);
    });

    it('commits a filesystem that new boxes start from, leaving the parent untouched', async () => {
      const parent = await s.runtime.create(spec('parent'));
      await s.runtime.putFile(parent.id, '/tmp/parent-file', Buffer.from('p'));
      const ref = `boxd-test/ct-${run}:snap`;
      await s.runtime.commit(parent.id, ref, { 'boxd.instance': `ct-${run}` });
      assert.equal(await s.runtime.hasImage(ref), true);
      const child = await s.runtime.create(spec('child', { image: ref }));
      assert.equal((await s.runtime.getFile(child.id, '/tmp/parent-file')).toString(), 'p');
      await s.runtime.exec(child.id, { cmd: ['rm', '/tmp/parent-file'] });
      await assert.rejects(s.runtime.getFile(child.id, '/tmp/parent-file'), (e) => codeOf(e) === 'FILE_NOT_FOUND');
      assert.equal((await s.runtime.getFile(parent.id, '/tmp/parent-file')).toString(), 'p');
      assert.equal(await s.runtime.removeImage(ref), false, 'an image in use is kept');
      await s.runtime.destroy(child.id);
      assert.equal(await s.runtime.removeImage(ref), true);
    });

    it('copies one box’s changes into a fresh box of the same image (both frozen)', async () => {
      const from = await s.runtime.create(spec('copy-from'));
      const to = await s.runtime.create(spec('copy-to'));
      await s.runtime.putFile(from.id, '/tmp/copied/file', Buffer.from('from'), 0o640);
      await s.runtime.suspend(from.id);
      await s.runtime.suspend(to.id);
      await s.runtime.copyChanges(from.id, to.id);
      await s.runtime.resume(to.id);
      await s.runtime.resume(from.id);
      assert.equal((await s.runtime.getFile(to.id, '/tmp/copied/file')).toString(), 'from');
      await s.runtime.exec(to.id, { cmd: ['rm', '/tmp/copied/file'] });
      assert.equal((await s.runtime.getFile(from.id, '/tmp/copied/file')).toString(), 'from', 'the source is untouched');
      const other = `boxd-test/ct-${run}:other`;
      await s.runtime.commit(from.id, other, { 'boxd.instance': `ct-${run}` });
      const third = await s.runtime.create(spec('copy-other', { image: other }));
      await s.runtime.suspend(third.id);
      await assert.rejects(s.runtime.copyChanges(from.id, third.id), (e) => codeOf(e) === 'NOT_SUPPORTED', 'different images');
      for (const b of [from, to, third]) await s.runtime.destroy(b.id);
      await s.runtime.removeImage(other);
    });

    it('tags an image under a second name', async () => {
      const ref = `boxd-test/ct-${run}:tagged`;
      await s.runtime.tagImage(s.image, ref);
      assert.equal(await s.runtime.hasImage(ref), true);
      assert.equal(await s.runtime.removeImage(ref), true);
      assert.equal(await s.runtime.hasImage(s.image), true, 'the first name stays');
      await assert.rejects(s.runtime.tagImage('boxd-test/none:nope', ref), (e) => codeOf(e) === 'IMAGE_NOT_FOUND');
    });

    it('destroys idempotently', async () => {
      const box = await s.runtime.create(spec('destroy'));
      await s.runtime.destroy(box.id);
      await s.runtime.destroy(box.id);
      assert.equal(await s.runtime.inspect(box.id), undefined);
      await assert.rejects(s.runtime.exec(box.id, { cmd: ['true'] }), (e) => codeOf(e) === 'BOX_NOT_FOUND');
    });
  });
}
