// Boots the IPVS lab's guest with no network and one program, for tests
// and debugging: `node test/ipvs/boot.ts test/ipvs/guest/edge-check.ts OUT_DIR`.
// The program runs with OUT_DIR shared at /out; the exit status is the
// guest's. Runs under the machine's heavy-run lock.

import { fileURLToPath } from 'node:url';
import { bootGuest, ensureGuestImage } from './host.ts';
import { holdHeavyLock } from './heavy-lock.ts';

const [main, outDir] = process.argv.slice(2);
if (main === undefined || outDir === undefined) {
  process.stderr.write('usage: node test/ipvs/boot.ts PROGRAM.ts OUT_DIR\n');
  process.exit(2);
}
holdHeavyLock(fileURLToPath(import.meta.url), [main, outDir]);
const log = (line: string) => process.stderr.write(`${line}\n`);
bootGuest({ image: ensureGuestImage(log), main, outDir, logDir: outDir, log }).then(
  () => process.exit(0),
  (error: unknown) => {
    log(`boot: ${(error as Error).message}`);
    process.exit(1);
  },
);
