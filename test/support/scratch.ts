// Temporary directories for tests, removed when the test process exits
// (node --test runs each file in its own process), pass or fail: they join
// the one cleanup registry of test/support/cluster/processes.ts.

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { trackDirectory } from './cluster/processes.ts';

export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  trackDirectory(dir);
  return dir;
}
