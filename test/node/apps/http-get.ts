// A client inside the pod network, run by the test image's Node 24 (the
// image's busybox-static wget crashes: a static glibc binary cannot load the
// name-service modules):
//
//   node /app/http-get.ts URL [COUNT]
//
// GETs URL COUNT times (default 1), each on a new connection with a 2 s
// timeout, and prints one line per request: the body, or `error: ...`.
// Exits 1 when any request failed.

const [url, countArg] = process.argv.slice(2);
if (url === undefined) {
  process.stderr.write('usage: http-get.ts URL [COUNT]\n');
  process.exit(2);
}
let failed = false;
for (let i = 0; i < Number(countArg ?? '1'); i++) {
  try {
    const res = await fetch(url, {
      signal: AbortSignal.timeout(2_000),
      headers: { connection: 'close' },
    });
    process.stdout.write(`${(await res.text()).trim()}\n`);
    if (!res.ok) failed = true;
  } catch (error) {
    process.stdout.write(`error: ${(error as Error).message}\n`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
