import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { HostInfo } from '../core/jobs.ts';
import { freeShare, placeBox, type PlacementRequest } from '../core/placement.ts';
import { committed, hostCapacity } from '../host/heartbeat.ts';

const NOW = 1_000_000;
const policy = { now: NOW, deadMs: 15_000, overcommit: 1 };
const host = (id: string, over: Partial<HostInfo> = {}): HostInfo => ({
  id, startedAt: 0, heartbeatAt: NOW - 1000,
  capacity: { cpus: 8, memoryMb: 16_384 }, committed: { cpus: 0, memoryMb: 0 }, boxes: { running: 0, suspended: 0, other: 0 }, goldens: ['tiny', 'default'],
  ...over,
});
const tiny: PlacementRequest = { cpus: 1, memoryMb: 512, golden: 'tiny' };

describe('placeBox', () => {
  const table: [string, HostInfo[], PlacementRequest, ReturnType<typeof placeBox>['ok'], string][] = [
    ['the emptier of two hosts', [host('a', { committed: { cpus: 4, memoryMb: 2048 } }), host('b', { committed: { cpus: 1, memoryMb: 1024 } })], tiny, true, 'b'],
    ['memory decides when cpu is equal', [host('a', { committed: { cpus: 2, memoryMb: 12_000 } }), host('b', { committed: { cpus: 2, memoryMb: 1000 } })], tiny, true, 'b'],
    ['a bigger host with the same load', [host('a'), host('b', { capacity: { cpus: 16, memoryMb: 65_536 } })], tiny, true, 'b'],
    ['never a dead host, however empty', [host('a', { committed: { cpus: 6, memoryMb: 8000 } }), host('b', { heartbeatAt: NOW - 15_000 })], tiny, true, 'a'],
    ['only hosts holding the golden', [host('a', { goldens: ['default'] }), host('b', { committed: { cpus: 7, memoryMb: 0 } })], tiny, true, 'b'],
    ['ties go to the fewest boxes, then the id', [host('b'), host('a', { boxes: { running: 0, suspended: 3, other: 0 } })], tiny, true, 'b'],
    ['ties with equal boxes go to the lower id', [host('b'), host('a')], tiny, true, 'a'],
    ['an image create (no golden) may go anywhere', [host('a', { goldens: [] })], { cpus: 1, memoryMb: 512 }, true, 'a'],
    ['a box that fits exactly', [host('a', { committed: { cpus: 7, memoryMb: 15_872 } })], tiny, true, 'a'],
    ['full hosts: NO_CAPACITY', [host('a', { committed: { cpus: 7.5, memoryMb: 0 } }), host('b', { committed: { cpus: 0, memoryMb: 16_000 } })], tiny, false, 'NO_CAPACITY'],
    ['a box bigger than any host: NO_CAPACITY', [host('a')], { cpus: 2, memoryMb: 32_768, golden: 'default' }, false, 'NO_CAPACITY'],
    ['no live host: NO_HOST', [host('a', { heartbeatAt: NOW - 60_000 })], tiny, false, 'NO_HOST'],
    ['no host at all: NO_HOST', [], tiny, false, 'NO_HOST'],
    ['golden held by a dead host only: NO_GOLDEN', [host('a', { goldens: [] }), host('b', { heartbeatAt: 0 })], tiny, false, 'NO_GOLDEN'],
    ['excluded hosts are skipped', [host('a'), host('b', { committed: { cpus: 4, memoryMb: 0 } })], { ...tiny, exclude: ['a'] }, true, 'b'],
  ];
  for (const [what, hosts, req, ok, want] of table) {
    it(what, () => {
      const got = placeBox(hosts, req, policy);
      assert.equal(got.ok, ok, JSON.stringify(got));
      assert.equal(got.ok ? got.hostId : got.reason, want);
      if (!got.ok) assert.match(got.message, /host/);
    });
  }

  it('overcommit admits more than the capacity', () => {
    const full = [host('a', { committed: { cpus: 8, memoryMb: 16_384 } })];
    assert.equal(placeBox(full, tiny, policy).ok, false);
    assert.equal(placeBox(full, tiny, { ...policy, overcommit: 2 }).ok, true);
  });

  it('cpu has its own overcommit', () => {
    const busy = [host('a', { committed: { cpus: 8, memoryMb: 0 } })];
    assert.equal(placeBox(busy, tiny, policy).ok, false);
    assert.equal(placeBox(busy, tiny, { ...policy, cpuOvercommit: 4 }).ok, true);
  });

  it('a host that advertises no capacity takes nothing', () => {
    assert.equal(freeShare(host('a', { capacity: undefined }), { cpus: 0, memoryMb: 0 }, 1), -1);
  });
});

describe('host commitments', () => {
  it('counts running and creating boxes in full, suspended ones no cpu and memory at the weight, others not at all', () => {
    const got = committed(
      [
        { state: 'running', cpus: 2, memoryMb: 8192 },
        { state: 'creating', cpus: 1, memoryMb: 512 },
        { state: 'suspended', cpus: 1, memoryMb: 512 },
        { state: 'suspended', cpus: 2, memoryMb: 8192 },
        { state: 'error', cpus: 2, memoryMb: 8192 },
        { state: 'lost', cpus: 2, memoryMb: 8192 },
      ],
      0.1,
    );
    assert.deepEqual(got.committed, { cpus: 3, memoryMb: 8192 + 512 + 51 + 819 });
    assert.deepEqual(got.boxes, { running: 2, suspended: 2, other: 2 });
  });

  it('takes configured capacity over detected', () => {
    assert.deepEqual(hostCapacity(3, 1000), { cpus: 3, memoryMb: 1000 });
    const detected = hostCapacity(0, 0);
    assert.ok(detected.cpus >= 1 && detected.memoryMb > 100);
  });
});
