import { Compute } from './sdk/index.ts';

const id = Date.now().toString(36);
const c = new Compute({ apiKey: process.env.BOXD_API_KEY }); // baseUrl defaults to BOXD_URL
const box = await c.box.create({ name: `task-${id}` });
try {
  await box.exec(['bash', '-lc', 'git --version']);
  await box.exec(['bash', '-lc', 'python3 -c "print(1)"']);
  await box.suspend();
  await box.resume();
  for await (const e of box.stream(['bash', '-c', 'for i in 1 2; do echo $i; done'])) console.log(e);
  await box.files.write('/workspace/a.txt', 'hi');
  const child = await box.fork({ name: `task-${id}-try` });
  try {
    console.log(child.url);
  } finally {
    await child.destroy();
  }
  await box.snapshot(`before-${id}`);
  await c.snapshots.delete(`before-${id}`);
} finally {
  await box.destroy();
}
