// The chart's files, read without helm: the values table of its README is
// the one values.yaml's comments make, every value is documented and known
// to the strict schema, Chart.yaml carries the metadata chart indexes read.
// Rendering and validation by a real API server: test/apiserver/.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parse, parseDocument } from 'yaml';
import {
  README_FILE,
  VALUES_FILE,
  valueRows,
  valuesTable,
  withTable,
} from '../../scripts/chart-values-table.ts';

const chartDir = fileURLToPath(new URL('../../charts/prestop-injector/', import.meta.url));
const valuesText = fs.readFileSync(VALUES_FILE, 'utf8');
const values = parse(valuesText) as Record<string, unknown>;

interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  additionalProperties?: boolean | Schema;
  $ref?: string;
  definitions?: Record<string, Schema>;
}
const schema = JSON.parse(
  fs.readFileSync(path.join(chartDir, 'values.schema.json'), 'utf8'),
) as Schema;
const resolve = (node: Schema): Schema =>
  node.$ref ? resolve(schema.definitions![node.$ref.replace('#/definitions/', '')]!) : node;

describe('the chart values', () => {
  it('are all documented, and the README table is the one their comments make', () => {
    const { rows, undocumented } = valueRows(valuesText);
    assert.deepEqual(undocumented, [], 'every value has a comment right above it');
    assert.ok(rows.length > 60, `${rows.length} rows`);
    const readme = fs.readFileSync(README_FILE, 'utf8');
    const table = (text: string) =>
      text.slice(text.indexOf('<!-- values:start -->'), text.indexOf('<!-- values:end -->'));
    assert.equal(
      table(readme),
      table(withTable(readme, valuesTable(valuesText))),
      'charts/prestop-injector/README.md is stale: run node scripts/chart-values-table.ts --write',
    );
  });

  it('make a table with one row per documented value, sections flattened', () => {
    const { rows, undocumented } = valueRows(
      [
        '# File header.',
        '',
        'group:',
        "  # First, the map's own comment",
        '  first: 1',
        '  second: b # trailing comments are not descriptions',
        '# A documented map with undocumented entries is one row.',
        'resources:',
        '  limits: {memory: 1Gi}',
      ].join('\n'),
    );
    assert.deepEqual(rows, [
      { key: 'group.first', default: 1, description: "First, the map's own comment" },
      { key: 'group.second', default: 'b', description: '' },
      {
        key: 'resources',
        default: { limits: { memory: '1Gi' } },
        description: 'A documented map with undocumented entries is one row.',
      },
    ]);
    assert.deepEqual(undocumented, ['group.second']);
    assert.match(valuesTable('# a | b\nx: "|"'), /\| `x` \| `"\\\|"` \| a \\\| b \|/);
  });

  it('are all known to the strict schema, which has no section values.yaml lacks', () => {
    const walk = (node: unknown, s: Schema, at: string) => {
      const schemaNode = resolve(s);
      if (typeof node !== 'object' || node === null || Array.isArray(node)) return;
      if (schemaNode.properties === undefined) return;
      assert.equal(schemaNode.additionalProperties, false, `${at || '/'} is strict`);
      for (const [key, child] of Object.entries(node)) {
        assert.ok(key in schemaNode.properties, `${at}/${key} is in the schema`);
        walk(child, schemaNode.properties[key]!, `${at}/${key}`);
      }
    };
    walk(values, schema, '');
    const sections = Object.keys(schema.properties!).filter((k) => k !== 'global');
    assert.deepEqual(sections.sort(), Object.keys(values).sort());
  });
});

describe('Chart.yaml', () => {
  const chart = parseDocument(
    fs.readFileSync(path.join(chartDir, 'Chart.yaml'), 'utf8'),
  ).toJS() as {
    home: string;
    sources: string[];
    icon: string;
    maintainers: { name: string; email?: string }[];
    annotations: Record<string, string>;
    appVersion: string;
  };
  const packageJson = JSON.parse(
    fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
  ) as {
    version: string;
    license: string;
  };

  it('names its home, sources, icon and maintainers', () => {
    for (const url of [chart.home, ...chart.sources, chart.icon])
      assert.match(url, /^https:\/\/\S+$/);
    assert.ok(chart.maintainers.length > 0 && chart.maintainers.every((m) => m.name !== ''));
    // The icon the URL names is the chart's own file, at the same path in the repository.
    assert.ok(chart.icon.endsWith('/charts/prestop-injector/icon.svg'));
    assert.match(
      fs.readFileSync(path.join(chartDir, 'icon.svg'), 'utf8'),
      /^<svg [^>]*xmlns="http:\/\/www\.w3\.org\/2000\/svg"/,
    );
    assert.equal(chart.appVersion, packageJson.version);
  });

  it('carries Artifact Hub annotations that parse', () => {
    const a = chart.annotations;
    assert.equal(a['artifacthub.io/license'], packageJson.license);
    assert.match(a['artifacthub.io/prerelease']!, /^(true|false)$/);
    const links = parse(a['artifacthub.io/links']!) as { name: string; url: string }[];
    assert.ok(links.length > 0 && links.every((l) => l.name && /^https:\/\//.test(l.url)));
    const changes = parse(a['artifacthub.io/changes']!) as { kind: string; description: string }[];
    for (const change of changes) {
      assert.ok(
        ['added', 'changed', 'deprecated', 'removed', 'fixed', 'security'].includes(change.kind),
        change.kind,
      );
      assert.ok(change.description.length > 10);
    }
  });

  it('keeps its ci/ value sets and icon out of the package', () => {
    const ignore = fs.readFileSync(path.join(chartDir, '.helmignore'), 'utf8').split('\n');
    assert.ok(ignore.includes('ci/') && ignore.includes('icon.svg'));
    const sets = fs.readdirSync(path.join(chartDir, 'ci'));
    assert.ok(sets.length >= 10);
    for (const file of sets) {
      assert.match(file, /-values\.yaml$/);
      const set = parse(fs.readFileSync(path.join(chartDir, 'ci', file), 'utf8')) as {
        image?: { repository?: string };
      };
      assert.ok(set.image?.repository, `${file} names the image (the one required value)`);
    }
  });
});
