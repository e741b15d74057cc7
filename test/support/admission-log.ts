// Every admission a webhook log records, whether on a line of its own
// ("admission") or grouped with others of the same plan ("admissions").

export type LogEntry = Record<string, unknown>;

/** One entry per admission: its own line, or its record with the group's decision fields. */
export function admissionRecords(lines: readonly LogEntry[]): LogEntry[] {
  const records: LogEntry[] = [];
  for (const line of lines) {
    if (line['msg'] === 'admission') {
      records.push(line);
    } else if (line['msg'] === 'admissions') {
      const { admissions, count, ...decision } = line;
      if (!Array.isArray(admissions) || admissions.length !== count)
        throw new Error(
          `an admissions line whose count is not its length: ${JSON.stringify(line)}`,
        );
      for (const record of admissions as LogEntry[])
        records.push({ ...decision, ...record, msg: 'admission', grouped: true });
    }
  }
  return records;
}
