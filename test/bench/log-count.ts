// Reads a webhook's log on standard input and prints, when it ends, how
// many lines it held and how many of them record an admission:
// {"lines":N,"admissions":M}. It counts bytes rather than parsing JSON, so
// that it keeps up with the webhook, as a container runtime's log reader
// does; a reader that falls behind makes the webhook buffer its log.

const ADMISSION = Buffer.from('"msg":"admission"');
const NEWLINE = 0x0a;

let lines = 0;
let admissions = 0;
/** The end of the last chunk, in case a marker spans two chunks. */
let carry: Buffer = Buffer.alloc(0);
for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
  for (let i = chunk.indexOf(NEWLINE); i !== -1; i = chunk.indexOf(NEWLINE, i + 1)) lines++;
  const text = carry.length === 0 ? chunk : Buffer.concat([carry, chunk]);
  for (let i = text.indexOf(ADMISSION); i !== -1; i = text.indexOf(ADMISSION, i + 1)) {
    admissions++;
  }
  // Keep less than a marker, so none is counted twice.
  carry = text.subarray(Math.max(0, text.length - (ADMISSION.length - 1)));
}
process.stdout.write(`${JSON.stringify({ lines, admissions })}\n`);
