import { FakeRuntime } from './fake-runtime.ts';
import { runtimeContract } from './runtime-contract.ts';

runtimeContract('FakeRuntime', async () => {
  const runtime = new FakeRuntime();
  return { runtime, image: 'fake/base:1', cleanup: async () => undefined };
});
