// Reads a webhook's log on standard input and prints, when it ends, how
// many lines it held and how many admissions they record (a grouped line
// records several): {"lines":N,"admissions":M}.

import { createInterface } from 'node:readline';

let lines = 0;
let admissions = 0;
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  lines++;
  if (!line.startsWith('{')) continue;
  const entry = JSON.parse(line) as { msg?: unknown; count?: unknown; admissions?: unknown };
  if (entry.msg === 'admission') admissions++;
  else if (entry.msg === 'admissions') {
    if (!Array.isArray(entry.admissions) || entry.admissions.length !== entry.count)
      throw new Error(`a grouped line whose count is not its length: ${line.slice(0, 200)}`);
    admissions += entry.admissions.length;
  }
}
process.stdout.write(`${JSON.stringify({ lines, admissions })}\n`);
