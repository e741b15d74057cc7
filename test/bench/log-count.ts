// Reads a webhook's log on standard input and prints, when it ends, how
// many lines it held and how many admissions they record (a grouped line
// records several): {"lines":N,"admissions":M}.

import { createInterface } from 'node:readline';
import { admissionRecords, type LogEntry } from '../support/admission-log.ts';

let lines = 0;
let admissions = 0;
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  lines++;
  if (line.startsWith('{')) admissions += admissionRecords([JSON.parse(line) as LogEntry]).length;
}
process.stdout.write(`${JSON.stringify({ lines, admissions })}\n`);
