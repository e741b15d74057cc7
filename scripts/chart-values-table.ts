// The values table of the chart's README, made from the comments of its
// values.yaml: the comment right above a value describes it. A commented
// map whose entries have no comments of their own is one row (e.g.
// resources); any other map is a section whose entries are rows.
//
//   node scripts/chart-values-table.ts          exits 1 when the README is stale
//   node scripts/chart-values-table.ts --write  rewrites the table in the README

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isMap, isScalar, parseDocument, type Pair, type YAMLMap } from 'yaml';

const chartDir = fileURLToPath(new URL('../charts/prestop-injector/', import.meta.url));
export const VALUES_FILE = path.join(chartDir, 'values.yaml');
export const README_FILE = path.join(chartDir, 'README.md');
const START = '<!-- values:start -->';
const END = '<!-- values:end -->';

export interface ValueRow {
  key: string;
  default: unknown;
  description: string;
}

/** The comment of the pair at `index` of `map`: yaml puts a first entry's on the map. */
function commentOf(map: YAMLMap, index: number): string {
  const pair = map.items[index] as Pair;
  const key = pair.key as { commentBefore?: string | null } | null;
  const raw = (index === 0 ? (map.commentBefore ?? key?.commentBefore) : key?.commentBefore) ?? '';
  // A file's header comment comes before the first key's own, after a blank line.
  const paragraphs = raw.split(/\n\s*\n/);
  return paragraphs[paragraphs.length - 1]!.split('\n')
    .map((line) => line.trim())
    .join(' ')
    .trim();
}

/** True when an entry of the map, at any depth, has a comment. */
function hasComments(map: YAMLMap): boolean {
  return map.items.some(
    (item, i) =>
      commentOf(map, i) !== '' ||
      (isMap((item as Pair).value) && hasComments((item as Pair).value as YAMLMap)),
  );
}

/** Rows in file order; `undocumented` collects the keys with no comment. */
export function valueRows(valuesYaml: string): { rows: ValueRow[]; undocumented: string[] } {
  const doc = parseDocument(valuesYaml);
  const rows: ValueRow[] = [];
  const undocumented: string[] = [];
  const walk = (map: YAMLMap, prefix: string) => {
    map.items.forEach((item, index) => {
      const pair = item as Pair;
      const key = `${prefix}${isScalar(pair.key) ? String(pair.key.value) : String(pair.key)}`;
      const comment = commentOf(map, index);
      const value = pair.value;
      if (isMap(value) && value.items.length > 0 && (comment === '' || hasComments(value))) {
        walk(value, `${key}.`);
        return;
      }
      if (comment === '') undocumented.push(key);
      rows.push({
        key,
        default: (value as { toJSON?: () => unknown } | null)?.toJSON?.() ?? null,
        description: comment,
      });
    });
  };
  if (!isMap(doc.contents)) throw new Error('values.yaml is not a map');
  walk(doc.contents, '');
  return { rows, undocumented };
}

const cell = (text: string) => text.replace(/\|/g, '\\|');

export function valuesTable(valuesYaml: string): string {
  const { rows } = valueRows(valuesYaml);
  const lines = ['| value | default | what |', '|---|---|---|'];
  for (const row of rows) {
    lines.push(
      `| \`${row.key}\` | \`${cell(JSON.stringify(row.default))}\` | ${cell(row.description)} |`,
    );
  }
  return lines.join('\n');
}

/** The README with its table (between the markers) replaced. */
export function withTable(readme: string, table: string): string {
  const start = readme.indexOf(START);
  const end = readme.indexOf(END);
  if (start === -1 || end < start) throw new Error(`${README_FILE}: ${START} ... ${END} not found`);
  return `${readme.slice(0, start + START.length)}\n${table}\n${readme.slice(end)}`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const readme = fs.readFileSync(README_FILE, 'utf8');
  const next = withTable(readme, valuesTable(fs.readFileSync(VALUES_FILE, 'utf8')));
  if (process.argv.includes('--write')) {
    fs.writeFileSync(README_FILE, next);
  } else if (next !== readme) {
    process.stderr.write('the values table of the chart README is stale: run with --write\n');
    process.exitCode = 1;
  }
}
