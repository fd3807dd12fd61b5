// `npm test`: client unit tests (fake clock), then the client against real
// Pulse processes, then the dashboard end to end in headless Chromium.
// Builds the Rust binaries with cargo first when they are missing.
import { spawnSync } from 'node:child_process';
import { ensureBinaries } from './harness.js';

ensureBinaries();
const suites = ['test/unit/', 'test/integration/', 'test/e2e/'];
for (const dir of suites) {
  console.log(`\n== ${dir}`);
  const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', dir], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
