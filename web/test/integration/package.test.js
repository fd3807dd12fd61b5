// The package installs as users install it: `npm pack`, then the tarball
// into an empty project, then `pulse-web/client` and `pulse-web/react`
// imported by Node from there. No network: the package has no runtime
// dependencies, and React (an optional peer) is packed from node_modules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { webDir } from '../harness.js';

const npm = (args, cwd) => execFileSync('npm', [...args, '--no-audit', '--no-fund', '--offline', '--loglevel=error'], { cwd, encoding: 'utf8' });

test('npm pack + npm install of the tarball: client and react entry points import in Node', () => {
  const pkg = JSON.parse(readFileSync(path.join(webDir, 'package.json'), 'utf8'));
  assert.equal(pkg.private, undefined, 'a private package cannot be packed for installing');
  assert.deepEqual(Object.keys(pkg.dependencies || {}), [], 'no runtime dependencies');
  const dir = mkdtempSync(path.join(tmpdir(), 'pulse-web-pack-'));
  try {
    const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', dir], { cwd: webDir, encoding: 'utf8' }));
    const files = packed[0].files.map((f) => f.path).sort();
    for (const f of ['client/pulse-client.js', 'client/pulse-client.d.ts', 'dashboard/pulse-client.js', 'react/index.js', 'react/index.d.ts', 'package.json']) {
      assert.ok(files.includes(f), `${f} is in the tarball (${files})`);
    }
    assert.ok(!files.some((f) => f.startsWith('test/') || f.startsWith('node_modules/')), 'no tests in the tarball');

    const app = path.join(dir, 'app');
    execFileSync('mkdir', ['-p', app]);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
    // React from the copy the dev dependencies installed, packed the same way.
    const reactPacked = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', dir, path.join(webDir, 'node_modules/react')], { cwd: dir, encoding: 'utf8' }));
    npm(['install', path.join(dir, packed[0].filename), path.join(dir, reactPacked[0].filename)], app);
    // Installed as a copy (not a link back into the checkout).
    assert.ok(existsSync(path.join(app, 'node_modules/pulse-web/client/pulse-client.d.ts')));

    writeFileSync(path.join(app, 'check.js'), `
import { PulseClient, parsePosition, comparePositions } from 'pulse-web/client';
import Default from 'pulse-web';
import { PulseProvider, useChannel, useChannelState, usePulse } from 'pulse-web/react';
const c = new PulseClient({ url: 'ws://127.0.0.1:9/ws', autoConnect: false, window: null });
console.log(JSON.stringify({
  client: typeof PulseClient, same: Default === PulseClient, state: c.state,
  position: parsePosition('k3f9x2ab:1763800000000-0'), cmp: comparePositions('a:2-0', 'b:1-0'),
  react: [PulseProvider, useChannel, useChannelState, usePulse].map((f) => typeof f),
}));
`);
    const out = JSON.parse(execFileSync(process.execPath, ['check.js'], { cwd: app, encoding: 'utf8' }));
    assert.deepEqual(out, {
      client: 'function', same: true, state: 'idle',
      position: { epoch: 'k3f9x2ab', ms: '1763800000000', seq: '0' }, cmp: null,
      react: ['function', 'function', 'function', 'function'],
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
