// The offline mutation: YAML or JSON manifests in, the same manifests out
// with the webhook's mutation applied to every pod and pod template.
//
// Manifests are read as Kubernetes reads them (sigs.k8s.io/yaml, which is
// go-yaml v2: YAML 1.1 scalars), so the mutation sees the values the API
// server would store. They are written back by editing the source text: a
// document with nothing to change comes out byte for byte, and in a changed
// one only the patched nodes are new text. Every edited document is read
// again and must give exactly the mutated object before it is written.

import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import {
  Document,
  isAlias,
  type Alias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  parseAllDocuments,
  Parser,
  Scalar,
  visit,
  type CST,
  type DocumentOptions,
  type Node,
  type ParseOptions,
  type ScalarTag,
  type SchemaOptions,
  type Tags,
  type YAMLMap,
  type YAMLSeq,
} from 'yaml';
import { mutatePod, type Mutation, type MutationContext } from '../core/mutate.ts';
import { isRecord, type PodLike } from '../core/types.ts';
import { meshAddedAtAdmission, type NamespaceMetadata } from '../core/sidecars.ts';
import { locatePod, replacePod } from '../core/workloads.ts';
import { patchFor, type PatchOperation } from '../webhook/review.ts';

export class InputError extends Error {}

/** One manifest stream: a file, or standard input. */
export interface InputSource {
  /** As shown in messages: the path given, or "stdin". */
  name: string;
  text: string;
}

/** A pod or pod template found in the input, and what the mutation made of it. */
export interface InjectedDocument {
  /** Kind/name of the object holding the pod, for messages. */
  label: string;
  /** The source it came from. */
  file: string;
  mutation: Mutation | null;
}

export interface InjectResult {
  /** Every pod and pod template found, List items included, in input order. */
  documents: InjectedDocument[];
  /** Messages for stderr, each naming its file and document. */
  warnings: string[];
  yaml(): string;
  json(): string;
}

// ---------------------------------------------------------------------------
// Reading scalars as go-yaml v2 does (resolve.go): YAML 1.1 booleans and
// nulls, Go's integer syntax after "_" is dropped, and no sexagesimal
// numbers or timestamps (those stay strings).

const NULL_TEXT = /^(?:~|null|Null|NULL)?$/;
const TRUE_TEXT = /^(?:[yY]|[yY]es|YES|[tT]rue|TRUE|[oO]n|ON)$/;
const FALSE_TEXT = /^(?:[nN]|[nN]o|NO|[fF]alse|FALSE|[oO]ff|OFF)$/;
const SPECIAL_FLOAT_TEXT = /^(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$/;
const GO_INT = /^([-+]?)(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)$/;
const GO_FLOAT = /^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$/;
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const UINT64_MAX = 2n ** 64n - 1n;

/** A number when it fits a double exactly, else the bigint: no digit is ever lost. */
function exactInteger(value: bigint): number | bigint {
  const number = Number(value);
  return Number.isSafeInteger(number) ? number : value;
}

/** The number go-yaml v2 reads from a plain scalar, or undefined when it reads a string. */
export function goNumber(text: string): number | bigint | undefined {
  if (text.startsWith('.')) {
    // Handed to ParseFloat as is: no underscores, no sign.
    if (!/^\.[0-9]+(?:[eE][-+]?[0-9]+)?$/.test(text)) return undefined;
    const value = Number(text);
    return Number.isFinite(value) ? value : undefined;
  }
  if (!/^[-+0-9]/.test(text)) return undefined;
  const plain = text.replace(/_/g, '');
  const int = GO_INT.exec(plain);
  if (int !== null) {
    const sign = int[1]!;
    const digits = int[2]!;
    // ParseInt(s, 0, 64): a leading 0 means octal; ParseUint takes no sign.
    const magnitude = BigInt(
      /^0[0-7]+$/.test(digits) ? `0o${digits.slice(1)}` : digits.toLowerCase(),
    );
    const value = sign === '-' ? -magnitude : magnitude;
    const fits = sign === '' ? value <= UINT64_MAX : value >= INT64_MIN && value <= INT64_MAX;
    if (fits) return exactInteger(value);
  }
  if (!GO_FLOAT.test(plain)) return undefined;
  // Integers beyond 64 bits become doubles in Go; their digits are kept here.
  if (/^[-+]?[0-9]+$/.test(plain)) return exactInteger(BigInt(plain.replace(/^\+/, '')));
  const value = Number(plain);
  return Number.isFinite(value) ? value : undefined;
}

/** Parsed scalars print as written; new ones in the plainest form that reads back the same. */
function keptSource(source: unknown, reads: (text: string) => boolean): string | undefined {
  return typeof source === 'string' && reads(source) ? source : undefined;
}

const NULL_TAG: ScalarTag = {
  tag: 'tag:yaml.org,2002:null',
  default: true,
  identify: (value) => value === null || value === undefined,
  test: NULL_TEXT,
  resolve: () => new Scalar(null),
  stringify: ({ source }) => keptSource(source, (s) => s !== '' && NULL_TEXT.test(s)) ?? 'null',
};

function boolTag(value: boolean, test: RegExp): ScalarTag {
  return {
    tag: 'tag:yaml.org,2002:bool',
    default: true,
    identify: (v) => v === value,
    test,
    resolve: () => new Scalar(value),
    stringify: ({ source }) => keptSource(source, (s) => test.test(s)) ?? String(value),
  };
}

const NUMBER_TAG: ScalarTag = {
  tag: 'tag:yaml.org,2002:int',
  default: true,
  identify: (v) => typeof v === 'bigint' || (typeof v === 'number' && Number.isFinite(v)),
  // The library only calls test(); go-yaml's rules do not fit one regular expression.
  test: { test: (text: string) => goNumber(text) !== undefined } as unknown as RegExp,
  resolve: (text) => goNumber(text) ?? text,
  stringify: ({ source, value }) =>
    keptSource(source, (s) => goNumber(s) === value) ?? String(value),
};

const SPECIAL_FLOAT_TAG: ScalarTag = {
  tag: 'tag:yaml.org,2002:float',
  default: true,
  identify: (v) => typeof v === 'number' && !Number.isFinite(v),
  test: SPECIAL_FLOAT_TEXT,
  resolve: (text) => {
    if (/nan$/i.test(text)) return NaN;
    return text.startsWith('-') ? -Infinity : Infinity;
  },
  stringify: ({ source, value }) => {
    const kept = keptSource(source, (s) => SPECIAL_FLOAT_TEXT.test(s));
    if (kept !== undefined) return kept;
    if (Number.isNaN(value)) return '.nan';
    return (value as number) > 0 ? '.inf' : '-.inf';
  },
};

const SCALAR_TAGS = [NULL_TAG, boolTag(true, TRUE_TEXT), boolTag(false, FALSE_TEXT), NUMBER_TAG];
const REPLACED_TAGS = new Set(
  ['null', 'bool', 'int', 'float', 'timestamp'].map((t) => `tag:yaml.org,2002:${t}`),
);

/** The YAML 1.1 schema with go-yaml v2's scalars in place of the spec's. */
function kubernetesTags(tags: Tags): Tags {
  return [
    ...tags.filter(
      (t) => !REPLACED_TAGS.has(typeof t === 'string' ? `tag:yaml.org,2002:${t}` : t.tag),
    ),
    ...SCALAR_TAGS,
    SPECIAL_FLOAT_TAG,
  ];
}

const READ_OPTIONS: ParseOptions & DocumentOptions & SchemaOptions = {
  version: '1.1',
  schema: 'yaml-1.1',
  customTags: kubernetesTags,
  merge: true,
  uniqueKeys: false,
  prettyErrors: true,
  // Problems reach the user as this tool's messages, not as Node warnings.
  logLevel: 'error',
};

// New text quotes any string that some YAML 1.1 reader takes for another type.
const WRITE_OPTIONS: DocumentOptions & SchemaOptions = {
  version: '1.1',
  schema: 'yaml-1.1',
  customTags: (tags) => [...SCALAR_TAGS, SPECIAL_FLOAT_TAG, ...tags],
  logLevel: 'error',
};

const MAX_ALIAS_COUNT = 100;

// ---------------------------------------------------------------------------
// Streams and documents.

interface SourceDocument {
  source: InputSource;
  /** 1-based, for messages. */
  number: number;
  /** The document's own text: separators and comments included, so the slices rebuild the stream. */
  text: string;
  /** Where that text starts in the source's. */
  start: number;
  /** As parsed in the stream, with its source tokens. */
  parsed: Document.Parsed;
  value: unknown;
  /** What to write: the value itself when nothing changed. */
  output: unknown;
  /** Kind/name, for messages. */
  label: string;
}

function parseErrorMessage(source: InputSource, error: { message: string }): string {
  return `${source.name}: cannot parse input: ${error.message}`;
}

/**
 * Where each document of the stream starts: directives belong to the
 * document after them, comments to the one before.
 */
function documentStarts(text: string, ranges: readonly (readonly number[])[]): number[] {
  const directives: number[] = [];
  if (/^%/m.test(text)) {
    for (const token of new Parser().parse(text)) {
      if (token.type === 'directive') directives.push(token.offset);
    }
  }
  return ranges.map((range, i) => {
    if (i === 0) return 0;
    const previousEnd = ranges[i - 1]![2]!;
    return directives.find((d) => d >= previousEnd && d < range[0]!) ?? range[0]!;
  });
}

function labelOf(value: unknown, number: number): string {
  if (!isRecord(value)) return `document ${number}`;
  const metadata = isRecord(value['metadata']) ? value['metadata'] : {};
  const name = metadata['name'] ?? metadata['generateName'] ?? `#${number}`;
  return `${String(value['kind'] ?? 'object')}/${String(name)}`;
}

function readSource(source: InputSource): SourceDocument[] {
  const parsed = parseAllDocuments(source.text, { ...READ_OPTIONS, keepSourceTokens: true });
  const docs = [...parsed];
  // A stream with no document at all still reports its errors.
  const streamError = 'errors' in parsed ? parsed.errors[0] : undefined;
  if (streamError !== undefined) throw new InputError(parseErrorMessage(source, streamError));
  for (const doc of docs) {
    const error = doc.errors[0];
    if (error !== undefined) throw new InputError(parseErrorMessage(source, error));
  }
  const starts = documentStarts(
    source.text,
    docs.map((d) => d.range),
  );
  return docs.map((doc, i) => {
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
    } catch (error) {
      throw new InputError(
        `${source.name}: cannot read document ${i + 1}: ${(error as Error).message}`,
      );
    }
    return {
      source,
      number: i + 1,
      text: source.text.slice(starts[i], starts[i + 1] ?? source.text.length),
      start: starts[i]!,
      parsed: doc,
      value,
      output: value,
      label: labelOf(value, i + 1),
    };
  });
}

// ---------------------------------------------------------------------------
// Pods, in workloads and in Lists.

type PathKey = string | number;
type Path = readonly PathKey[];

interface PodSite {
  /** The object that holds the pod: the document, or a List item. */
  owner: Record<string, unknown>;
  /** From the document to the owner: empty, or through List items. */
  ownerPath: Path;
  /** From the owner to the pod (or template). */
  podPath: readonly string[];
  pod: PodLike;
}

function isList(value: unknown): value is Record<string, unknown> & { items: unknown[] } {
  return (
    isRecord(value) &&
    typeof value['kind'] === 'string' &&
    value['kind'].endsWith('List') &&
    Array.isArray(value['items'])
  );
}

/** Every pod in a document: its own, or those of its items when it is a List. */
function podSites(value: unknown, base: Path = []): PodSite[] {
  if (isList(value)) {
    return value.items.flatMap((item, i) => podSites(item, [...base, 'items', i]));
  }
  const location = locatePod(value);
  if (location === null || !isRecord(value)) return [];
  return [{ owner: value, ownerPath: base, podPath: location.path, pod: location.pod }];
}

/** Every object of a document, List items included. */
function objectsOf(value: unknown): unknown[] {
  return isList(value) ? value.items.flatMap(objectsOf) : [value];
}

/** A copy of `value` with the node at `path` replaced; what is not on the path is shared. */
function replaceAt(value: unknown, path: Path, replacement: unknown): unknown {
  if (path.length === 0) return replacement;
  const [head, ...rest] = path as [PathKey, ...PathKey[]];
  if (Array.isArray(value) && typeof head === 'number') {
    const copy = value.slice();
    copy[head] = replaceAt(value[head], rest, replacement);
    return copy;
  }
  const record = isRecord(value) ? value : {};
  return { ...record, [head]: replaceAt(record[head], rest, replacement) };
}

function namespaceOf(value: unknown): string | undefined {
  const metadata = isRecord(value) ? value['metadata'] : undefined;
  const namespace = isRecord(metadata) ? metadata['namespace'] : undefined;
  return typeof namespace === 'string' ? namespace : undefined;
}

/** The Namespace objects in the input, by name: they act as they would in a cluster. */
function namespaceMetadata(documents: readonly SourceDocument[]) {
  const found = new Map<string, NamespaceMetadata>();
  for (const object of documents.flatMap((d) => objectsOf(d.value))) {
    if (!isRecord(object) || object['kind'] !== 'Namespace' || !isRecord(object['metadata'])) {
      continue;
    }
    const { name, annotations, labels } = object['metadata'];
    if (typeof name === 'string') found.set(name, { annotations, labels });
  }
  return found;
}

// ---------------------------------------------------------------------------
// The change to a document: the webhook's own patch (fast-json-patch's
// compare), its JSON pointers split into keys and indices by walking the
// document, as a YAML edit needs them.

type Operation =
  { op: 'add' | 'replace'; path: PathKey[]; value: unknown } | { op: 'remove'; path: PathKey[] };

/** Drops undefined members, which no manifest can hold. */
function defined(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(defined);
  if (!isRecord(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [key, member] of Object.entries(value)) {
    if (member !== undefined) out[key] = defined(member);
  }
  return out;
}

/** A JSON pointer's segments, each an index where the document holds an array there. */
function pathIn(document: unknown, pointer: string): PathKey[] {
  const path: PathKey[] = [];
  let node: unknown = document;
  for (const escaped of pointer.split('/').slice(1)) {
    const segment = escaped.replaceAll('~1', '/').replaceAll('~0', '~');
    if (Array.isArray(node)) {
      path.push(Number(segment));
      node = node[Number(segment)];
    } else {
      path.push(segment);
      node = isRecord(node) ? node[segment] : undefined;
    }
  }
  return path;
}

/** The value at a JSON pointer, if any. */
function valueAt(document: unknown, pointer: string): unknown {
  let node = document;
  for (const key of pathIn(document, pointer)) {
    node = Array.isArray(node) ? node[key as number] : isRecord(node) ? node[key] : undefined;
  }
  return node;
}

/**
 * The patch, where an object loses every key it had and gains others (a
 * preStop changing handler on a later pass) as one replace of the object:
 * one new block reads best in YAML.
 */
function wholeReplacements(patch: readonly PatchOperation[], from: unknown, to: unknown) {
  const removedUnder = new Map<string, number>();
  for (const op of patch) {
    if (op.op !== 'remove') continue;
    const parent = op.path.slice(0, op.path.lastIndexOf('/'));
    removedUnder.set(parent, (removedUnder.get(parent) ?? 0) + 1);
  }
  const replaced = [...removedUnder].filter(([parent, removed]) => {
    const before = valueAt(from, parent);
    const after = valueAt(to, parent);
    return (
      isRecord(before) &&
      isRecord(after) &&
      parent !== '' &&
      Object.keys(before).length === removed &&
      Object.keys(after).length > 0
    );
  });
  if (replaced.length === 0) return patch;
  const covered = (path: string) => replaced.some(([parent]) => path.startsWith(`${parent}/`));
  return [
    ...patch.filter((op) => !covered(op.path)),
    ...replaced.map(([parent]): PatchOperation => ({
      op: 'replace',
      path: parent,
      value: valueAt(to, parent),
    })),
  ];
}

function changes(from: unknown, to: unknown): Operation[] {
  return wholeReplacements(patchFor(from, to), from, to).map((op) => {
    const path = pathIn(from, op.path);
    if (op.op === 'remove') return { op: 'remove', path };
    if (op.op === 'add' || op.op === 'replace') return { op: op.op, path, value: op.value };
    throw new Error(`unexpected patch operation ${op.op}`);
  });
}

// ---------------------------------------------------------------------------
// Rendering new values.

/** JSON with bigints written as their digits (JSON.stringify refuses them). */
function jsonText(value: unknown, indent: number | undefined = undefined): string {
  // A fresh random marker: no string of the input can hold it.
  const marker = randomUUID();
  const text = JSON.stringify(
    value,
    (_key, member: unknown) => {
      if (typeof member === 'bigint') return `${marker}:${member}`;
      if (typeof member === 'number' && !Number.isFinite(member)) {
        throw new InputError(`${member} cannot be written as JSON`);
      }
      return member;
    },
    indent,
  );
  return text.replace(new RegExp(`"${marker}:(-?\\d+)"`, 'g'), '$1');
}

interface Style {
  /** Columns from a key to the keys of its map value. */
  indent: number;
  /** Columns from a key to the dashes of its sequence value (0 as kubectl prints, 2 as Helm). */
  seqIndent: number;
  eol: string;
  /** The document is JSON: new flow content is JSON too. */
  json: boolean;
  /** Written as JSON.stringify does by default: no space after `,` or `:`. */
  compact: boolean;
}

/** A scalar on one line, safe inside a flow collection too. */
function scalarText(value: unknown, json: boolean): string {
  if (json) return jsonText(value);
  // Control characters and line breaks: JSON's escapes, which YAML reads too.
  if (typeof value === 'string' && /[\p{Cc}\u2028\u2029]/u.test(value)) return jsonText(value);
  const text = new Document([value], WRITE_OPTIONS)
    .toString({ collectionStyle: 'flow', lineWidth: 0, flowCollectionPadding: false })
    .trimEnd();
  const inner = text.slice(1, -1);
  return inner.includes('\n') ? jsonText(value) : inner;
}

/** A value on one line, in flow style (or JSON). */
function flowText(value: unknown, json: boolean): string {
  if (json) return jsonText(value);
  if (Array.isArray(value)) return `[${value.map((v) => flowText(v, json)).join(', ')}]`;
  if (isRecord(value)) {
    const entries = Object.entries(value).map(
      ([k, v]) => `${scalarText(k, json)}: ${flowText(v, json)}`,
    );
    return `{${entries.join(', ')}}`;
  }
  return scalarText(value, json);
}

/** A value in block style, at column 0, without its final newline. */
function blockText(value: unknown, style: Style): string {
  return new Document(value, WRITE_OPTIONS)
    .toString({
      lineWidth: 0,
      indent: style.indent,
      indentSeq: style.seqIndent > 0,
      flowCollectionPadding: false,
    })
    .replace(/\n$/, '');
}

/** Indents every line but the first (and no empty one) by `column` spaces. */
function indentRest(text: string, column: number, eol: string): string {
  const pad = ' '.repeat(column);
  return text
    .split('\n')
    .map((line, i) => (i === 0 || line === '' ? line : pad + line))
    .join(eol);
}

function isCollectionValue(value: unknown): boolean {
  return (
    (Array.isArray(value) && value.length > 0) || (isRecord(value) && Object.keys(value).length > 0)
  );
}

// ---------------------------------------------------------------------------
// Editing a document's text in place.

class SpliceError extends Error {}

interface Edit {
  start: number;
  end: number;
  text: string;
}

function lineStart(text: string, pos: number): number {
  return text.lastIndexOf('\n', pos - 1) + 1;
}

function columnOf(text: string, pos: number): number {
  return pos - lineStart(text, pos);
}

/** The offset just after the newline ending the line that holds `pos`. */
function nextLine(text: string, pos: number): number {
  const newline = text.indexOf('\n', pos);
  return newline === -1 ? text.length : newline + 1;
}

function rangeOf(node: Node | null | undefined): [number, number] {
  const range = node?.range;
  if (range === undefined || range === null) throw new SpliceError('a node without a position');
  return [range[0], range[1]];
}

/**
 * The last scalar (or flow collection) of a node: a block collection's range
 * runs on over the comments after it, up to the next key.
 */
function lastLeaf(node: Node): Node {
  let leaf: unknown = node;
  while ((isMap(leaf) || isSeq(leaf)) && !leaf.flow && leaf.items.length > 0) {
    const last: unknown = leaf.items[leaf.items.length - 1];
    leaf = isPair(last) ? (last.value ?? last.key) : last;
  }
  return leaf as Node;
}

function isBlockScalar(node: Node): boolean {
  return isScalar(node) && (node.type === 'BLOCK_LITERAL' || node.type === 'BLOCK_FOLDED');
}

/** The end of a node's own text, before the line break a block scalar ends with. */
function valueEnd(text: string, node: Node): number {
  const [start, end] = rangeOf(lastLeaf(node));
  let at = end;
  while (at > start && (text[at - 1] === '\n' || text[at - 1] === '\r')) at--;
  return at;
}

/** The start of the line after a node's last character. */
function lineAfter(text: string, node: Node): number {
  const leaf = lastLeaf(node);
  const [start, end] = rangeOf(leaf);
  // A block scalar's kept trailing lines are its content.
  return nextLine(text, Math.max(start, (isBlockScalar(leaf) ? end : valueEnd(text, leaf)) - 1));
}

function onlyIndentBefore(text: string, pos: number): boolean {
  return /^[ \t]*$/.test(text.slice(lineStart(text, pos), pos));
}

function readDocument(text: string, keepSourceTokens = false) {
  const docs = parseAllDocuments(text, { ...READ_OPTIONS, keepSourceTokens });
  if (!Array.isArray(docs) || docs.length !== 1) {
    throw new SpliceError('the document does not read back as one document');
  }
  const doc = docs[0]!;
  if (doc.errors.length > 0) throw new SpliceError(doc.errors[0]!.message);
  return doc;
}

function keyMatches(key: unknown, wanted: PathKey): boolean {
  return isScalar(key) && key.value !== '<<' && String(key.value) === String(wanted);
}

/** The last pair with this key (the one that wins when keys repeat). */
function pairIndex(map: YAMLMap, key: PathKey): number {
  for (let i = map.items.length - 1; i >= 0; i--) {
    if (keyMatches(map.items[i]!.key, key)) return i;
  }
  return -1;
}

/** The node at `path`, walking only the document's own nodes (never through an alias). */
function nodeAt(root: Node | null, path: Path): Node {
  let node: unknown = root;
  for (const key of path) {
    if (isMap(node)) {
      const index = pairIndex(node, key);
      if (index === -1) throw new SpliceError(`no key ${String(key)}`);
      node = node.items[index]!.value;
    } else if (isSeq(node) && typeof key === 'number') {
      node = node.items[key];
    } else {
      throw new SpliceError(isAlias(node) ? 'an alias on the path' : 'no such node');
    }
  }
  if (node === null || node === undefined || isAlias(node)) {
    throw new SpliceError('the node is missing or an alias');
  }
  return node as Node;
}

type BlockItem = CST.BlockMap['items'][number] | CST.BlockSequence['items'][number];

/** The CST items of a block collection, one per node (comment-only items dropped). */
function blockItems(collection: YAMLMap | YAMLSeq): BlockItem[] {
  const token = collection.srcToken;
  if (token?.type !== 'block-map' && token?.type !== 'block-seq') {
    throw new SpliceError('a block collection without its source');
  }
  const items = (token.items as BlockItem[]).filter((item) =>
    token.type === 'block-seq'
      ? item.start.some((t) => t.type === 'seq-item-ind')
      : 'key' in item && (item.key !== undefined || item.sep !== undefined),
  );
  if (items.length !== collection.items.length) {
    throw new SpliceError('the source does not match the collection');
  }
  return items;
}

function tokenOffset(tokens: readonly CST.SourceToken[] | undefined, type: string): number {
  const token = tokens?.find((t) => t.type === type);
  if (token === undefined) throw new SpliceError(`no ${type} in the source`);
  return token.offset;
}

/** How the document is laid out, for new text to match; `own` is the document's own text. */
function detectStyle(text: string, doc: Document.Parsed, own = text): Style {
  const style: Style = {
    indent: 2,
    seqIndent: 2,
    eol: own.includes('\r\n') ? '\r\n' : '\n',
    json: isMap(doc.contents) && doc.contents.flow === true,
    compact: false,
  };
  const root = doc.contents?.srcToken;
  if (style.json && root?.type === 'flow-collection') {
    const sep = root.items[0]?.sep ?? [];
    style.compact = sep.length > 0 && !sep.some((t) => t.type === 'space');
  }
  let indentFound = false;
  let seqFound = false;
  visit(doc, {
    Pair(_key, pair) {
      const key = pair.key as Node | null;
      const value = pair.value as Node | null;
      if (!isScalar(key) || !key.range) return undefined;
      const keyColumn = columnOf(text, key.range[0]);
      if (!indentFound && isMap(value) && !value.flow && value.items.length > 0) {
        const child = value.items[0]!.key as Node | null;
        const indent = child?.range ? columnOf(text, child.range[0]) - keyColumn : 0;
        if (indent > 0 && indent <= 8) [style.indent, indentFound] = [indent, true];
      }
      if (!seqFound && isSeq(value) && !value.flow && value.items.length > 0) {
        try {
          const dash = tokenOffset(blockItems(value)[0]!.start, 'seq-item-ind');
          const seqIndent = columnOf(text, dash) - keyColumn;
          if (seqIndent >= 0 && seqIndent <= 8) [style.seqIndent, seqFound] = [seqIndent, true];
        } catch {
          // No source for this one; another sequence may tell.
        }
      }
      return indentFound && seqFound ? visit.BREAK : undefined;
    },
  });
  return style;
}

function indentOfLine(text: string, pos: number): number {
  return /^[ \t]*/.exec(text.slice(lineStart(text, pos)))![0].length;
}

function firstEntry(collection: YAMLMap | YAMLSeq): Node | undefined {
  const first = collection.items[0];
  return (isMap(collection) ? (first as { key?: unknown } | undefined)?.key : first) as
    Node | undefined;
}

/**
 * How a JSON collection lays out its entries: one per line at `column`,
 * nested `step` further; null when it is written on one line (or is not JSON).
 */
function jsonLayout(
  text: string,
  collection: YAMLMap | YAMLSeq,
  style: Style,
): { column: number; step: number } | null {
  const first = firstEntry(collection);
  if (!style.json || first === undefined) return null;
  const [open] = rangeOf(collection);
  const [start] = rangeOf(first);
  if (lineStart(text, start) === lineStart(text, open)) return null;
  const column = columnOf(text, start);
  return { column, step: Math.max(1, column - indentOfLine(text, open)) };
}

function entrySeparator(layout: { column: number } | null, style: Style): string {
  if (layout !== null) return `,${style.eol}${' '.repeat(layout.column)}`;
  return style.compact ? ',' : ', ';
}

/** A new entry of a flow collection, after its last one or inside an empty one. */
function flowInsert(
  text: string,
  collection: YAMLMap | YAMLSeq,
  after: Node | undefined,
  entry: string,
  style: Style,
): Edit {
  if (after === undefined) {
    const [open] = rangeOf(collection);
    return { start: open + 1, end: open + 1, text: entry };
  }
  const at = valueEnd(text, after);
  const layout = jsonLayout(text, collection, style);
  return { start: at, end: at, text: entrySeparator(layout, style) + entry };
}

/** A value for a flow collection: on one line, or laid out as the JSON around it. */
function flowValue(
  text: string,
  collection: YAMLMap | YAMLSeq,
  value: unknown,
  column: number,
  style: Style,
): string {
  const layout = jsonLayout(text, collection, style);
  if (layout === null) return flowText(value, style.json);
  return indentRest(jsonText(value, layout.step), column, style.eol);
}

/** The start of a new line at `column` holding `body`, inserted at a line start `at`. */
function lineInsert(text: string, at: number, column: number, body: string, style: Style): Edit {
  const pad = ' '.repeat(column);
  if (at === text.length && !text.endsWith('\n')) {
    return { start: at, end: at, text: `${style.eol}${pad}${body}` };
  }
  return { start: at, end: at, text: `${pad}${body}${style.eol}` };
}

function replaceValue(
  text: string,
  doc: Document.Parsed,
  path: Path,
  value: unknown,
  style: Style,
): Edit {
  const key = path[path.length - 1]!;
  const parent = nodeAt(doc.contents, path.slice(0, -1)) as YAMLMap | YAMLSeq;
  const node = nodeAt(doc.contents, path);
  const [start] = rangeOf(node);
  const end = valueEnd(text, node);
  if (parent.flow) {
    return { start, end, text: flowValue(text, parent, value, indentOfLine(text, start), style) };
  }
  if (!isCollectionValue(value)) return { start, end, text: scalarText(value, false) };
  const items = blockItems(parent);
  // What follows the old value on its line (a comment) must not end up
  // after the new block, where a block scalar would take it in.
  const lineEnd = nextLine(text, end) - (text.endsWith('\n', nextLine(text, end)) ? 1 : 0);
  const after = text.slice(end, lineEnd).replace(/\r$/, '');
  if (isSeq(parent)) {
    if (after.trim() !== '') return { start, end, text: flowText(value, false) };
    // `- ` and the value, its later lines under its first.
    const dash = tokenOffset(items[key as number]!.start, 'seq-item-ind');
    const body = indentRest(blockText(value, style), columnOf(text, dash) + 2, style.eol);
    return { start: dash + 1, end, text: ` ${body}` };
  }
  // A map's value starts on the line after its key (and its comment).
  const index = pairIndex(parent, key);
  const item = items[index]!;
  const sep = 'sep' in item ? item.sep : undefined;
  const colon = tokenOffset(sep, 'map-value-ind');
  const between = (sep ?? []).filter((t) => t.offset > colon);
  if (between.some((t) => t.type !== 'space' && t.type !== 'newline')) {
    // A comment, anchor or tag before the value: keep it, write the value in flow style.
    return { start, end, text: flowText(value, false) };
  }
  const keyColumn = columnOf(text, rangeOf(parent.items[index]!.key as Node)[0]);
  const column = keyColumn + (Array.isArray(value) ? style.seqIndent : style.indent);
  const body = indentRest(blockText(value, style), column, style.eol);
  return {
    start: colon + 1,
    end: end + after.length,
    text: `${after}${style.eol}${' '.repeat(column)}${body}`,
  };
}

function addValue(
  text: string,
  doc: Document.Parsed,
  path: Path,
  value: unknown,
  style: Style,
): Edit {
  const key = path[path.length - 1]!;
  const parent = nodeAt(doc.contents, path.slice(0, -1));
  if (isMap(parent)) {
    if (pairIndex(parent, key) !== -1) return replaceValue(text, doc, path, value, style);
    return addPair(text, parent, String(key), value, style);
  }
  if (isSeq(parent)) {
    const index = key === '-' ? parent.items.length : key;
    if (typeof index !== 'number' || index > parent.items.length) {
      throw new SpliceError('an index past the end');
    }
    return addItem(text, parent, index, value, style);
  }
  throw new SpliceError('adding to a scalar');
}

function addPair(text: string, map: YAMLMap, key: string, value: unknown, style: Style): Edit {
  const last = map.items[map.items.length - 1];
  if (map.flow) {
    const layout = jsonLayout(text, map, style);
    const column = layout?.column ?? 0;
    const colon = style.compact ? ':' : ': ';
    const entry = `${scalarText(key, style.json)}${colon}${flowValue(text, map, value, column, style)}`;
    return flowInsert(text, map, (last?.value ?? last?.key) as Node | undefined, entry, style);
  }
  if (last === undefined) throw new SpliceError('an empty block map');
  const column = columnOf(text, rangeOf(map.items[0]!.key as Node)[0]);
  const body = indentRest(blockText({ [key]: value }, style), column, style.eol);
  return lineInsert(text, lineAfter(text, (last.value ?? last.key) as Node), column, body, style);
}

function addItem(text: string, seq: YAMLSeq, index: number, value: unknown, style: Style): Edit {
  if (seq.flow) {
    const layout = jsonLayout(text, seq, style);
    const entry = flowValue(text, seq, value, layout?.column ?? 0, style);
    if (index < seq.items.length) {
      const [start] = rangeOf(seq.items[index] as Node);
      return { start, end: start, text: entry + entrySeparator(layout, style) };
    }
    return flowInsert(text, seq, seq.items[seq.items.length - 1] as Node | undefined, entry, style);
  }
  const items = blockItems(seq);
  const column = columnOf(text, tokenOffset(items[0]!.start, 'seq-item-ind'));
  const body = indentRest(blockText([value], style), column, style.eol);
  if (index < seq.items.length) {
    const dash = tokenOffset(items[index]!.start, 'seq-item-ind');
    if (!onlyIndentBefore(text, dash)) throw new SpliceError('a dash after other content');
    return lineInsert(text, lineStart(text, dash), column, body, style);
  }
  return lineInsert(
    text,
    lineAfter(text, seq.items[seq.items.length - 1] as Node),
    column,
    body,
    style,
  );
}

/** Where an entry's text starts and ends: a pair's key to its value, or an item. */
function entryBounds(collection: YAMLMap | YAMLSeq, index: number): [Node, Node] {
  const item = collection.items[index] as unknown;
  if (!isMap(collection)) return [item as Node, item as Node];
  const pair = item as { key: unknown; value: unknown };
  return [pair.key as Node, (pair.value ?? pair.key) as Node];
}

function removeValue(text: string, doc: Document.Parsed, path: Path, style: Style): Edit {
  const parentPath = path.slice(0, -1);
  const key = path[path.length - 1]!;
  const parent = nodeAt(doc.contents, parentPath);
  if (!isMap(parent) && !isSeq(parent)) throw new SpliceError('removing from a scalar');
  const index = isMap(parent) ? pairIndex(parent, key) : (key as number);
  if (index < 0 || index >= parent.items.length) throw new SpliceError('nothing to remove');
  if (parent.items.length === 1) {
    // Its last entry: the collection stays, empty.
    if (parentPath.length === 0) throw new SpliceError('emptying the document');
    return replaceValue(text, doc, parentPath, isMap(parent) ? {} : [], style);
  }
  const [first, last] = entryBounds(parent, index);
  if (parent.flow) {
    if (index > 0) {
      const previous = entryBounds(parent, index - 1)[1];
      return { start: valueEnd(text, previous), end: valueEnd(text, last), text: '' };
    }
    const next = entryBounds(parent, 1)[0];
    return { start: rangeOf(first)[0], end: rangeOf(next)[0], text: '' };
  }
  const items = blockItems(parent);
  const lead = isSeq(parent) ? tokenOffset(items[index]!.start, 'seq-item-ind') : rangeOf(first)[0];
  if (!onlyIndentBefore(text, lead)) throw new SpliceError('an entry after other content');
  return { start: lineStart(text, lead), end: lineAfter(text, last), text: '' };
}

function editFor(text: string, doc: Document.Parsed, op: Operation, style: Style): Edit {
  if (op.path.length === 0) throw new SpliceError('replacing the whole document');
  if (op.op === 'remove') return removeValue(text, doc, op.path, style);
  if (op.op === 'replace') return replaceValue(text, doc, op.path, op.value, style);
  return addValue(text, doc, op.path, op.value, style);
}

/**
 * All the edits, placed from the parse of the whole stream: no parse of its
 * own. Edits that touch or share a place are left to spliceDocument.
 */
function spliceAtOnce(doc: SourceDocument, ops: readonly Operation[]): string {
  const source = doc.source.text;
  const style = detectStyle(source, doc.parsed, doc.text);
  const edits = ops
    .map((op, order) => ({ ...editFor(source, doc.parsed, op, style), order }))
    .sort((a, b) => a.start - b.start || a.order - b.order);
  const end = doc.start + doc.text.length;
  let out = '';
  let at = doc.start;
  for (const [i, edit] of edits.entries()) {
    const previous = edits[i - 1];
    const shared =
      previous !== undefined &&
      previous.start === edit.start &&
      (previous.end > previous.start || edit.end > edit.start);
    if (edit.start < at || shared || edit.end > end) throw new SpliceError('edits overlap');
    out += source.slice(at, edit.start) + edit.text;
    at = edit.end;
  }
  return out + source.slice(at, end);
}

/** Applies the operations to the text one by one, reading it again after each. */
function spliceDocument(text: string, ops: readonly Operation[]): string {
  let current = text;
  for (const op of ops) {
    const doc = readDocument(current, true);
    const style = detectStyle(current, doc);
    const edit = editFor(current, doc, op, style);
    current = current.slice(0, edit.start) + edit.text + current.slice(edit.end);
  }
  return current;
}

/** What an alias names, as a copy in its place: without the anchor (which must stay unique), with the alias's comments. */
function copyOf(alias: Alias, doc: Document.Parsed): Node {
  const node = alias.resolve(doc);
  if (node === undefined) throw new SpliceError('an alias to nothing');
  const copy = node.clone() as Node & { anchor?: string };
  delete copy.anchor;
  copy.comment = alias.comment ?? null;
  copy.commentBefore = alias.commentBefore ?? null;
  copy.spaceBefore = alias.spaceBefore ?? false;
  return copy;
}

/**
 * Makes the nodes on `path` this place's own: aliases on it become copies
 * of what they name, and aliases elsewhere to an anchor on it become copies
 * of it as it is now, so a change there reaches nothing else.
 */
function unshare(doc: Document.Parsed, path: Path): void {
  const anchors = new Set<string>();
  let node: unknown = doc.contents;
  for (const key of path) {
    let child: unknown;
    if (isMap(node)) {
      const pair = node.items[pairIndex(node, key)];
      if (pair === undefined) break;
      if (isAlias(pair.value)) pair.value = copyOf(pair.value, doc);
      child = pair.value;
    } else if (isSeq(node) && typeof key === 'number') {
      const item: unknown = node.items[key];
      if (isAlias(item)) node.items[key] = copyOf(item, doc);
      child = node.items[key];
    } else {
      break;
    }
    const anchor = (child as { anchor?: string } | null)?.anchor;
    if (anchor !== undefined) anchors.add(anchor);
    node = child;
  }
  if (anchors.size === 0) return;
  visit(doc, {
    Alias: (_key, alias) => (anchors.has(alias.source) ? copyOf(alias, doc) : undefined),
  });
}

/** The same operations on the parsed document, printed again: comments stay, layout may not. */
function rewriteDocument(text: string, ops: readonly Operation[]): string {
  const doc = readDocument(text, true);
  const style = detectStyle(text, doc);
  for (const op of ops) {
    unshare(doc, op.path);
    if (op.op === 'remove') {
      doc.deleteIn(op.path);
      continue;
    }
    const parentPath = op.path.slice(0, -1);
    const parent = parentPath.length === 0 ? doc.contents : doc.getIn(parentPath, true);
    if (!isMap(parent) && !isSeq(parent)) doc.setIn(parentPath, doc.createNode({}));
    doc.setIn(op.path, doc.createNode(op.value));
  }
  return doc.toString({
    lineWidth: 0,
    indent: style.indent,
    indentSeq: style.seqIndent > 0,
    flowCollectionPadding: false,
  });
}

function readsAs(text: string, expected: unknown): boolean {
  try {
    return isDeepStrictEqual(readDocument(text).toJS({ maxAliasCount: MAX_ALIAS_COUNT }), expected);
  } catch {
    return false;
  }
}

/**
 * The document's new text: edited in place when that reads back right,
 * else printed again (with a warning), and never a text that reads as
 * anything but the mutated object.
 */
function writeDocument(doc: SourceDocument, warn: (message: string) => void): string {
  const expected = defined(doc.output);
  const ops = changes(doc.value, expected);
  if (ops.length === 0) return doc.text;
  const attempts: (() => string)[] = [
    () => spliceAtOnce(doc, ops),
    () => spliceDocument(doc.text, ops),
    () => rewriteDocument(doc.text, ops),
    () => {
      const separator = /^---/.test(doc.text) || doc.number > 1 ? '---\n' : '';
      return separator + new Document(expected, WRITE_OPTIONS).toString({ lineWidth: 0 });
    },
  ];
  for (const [i, attempt] of attempts.entries()) {
    let written: string;
    try {
      written = attempt();
    } catch {
      continue;
    }
    if (!readsAs(written, expected)) continue;
    if (i > 1)
      warn('could not be edited in place; written again in full (layout and comments may differ)');
    return written;
  }
  warn('the change could not be written; passed through unchanged');
  return doc.text;
}

// ---------------------------------------------------------------------------
// Output.

/** Streams joined as one: each file's own text, a separator between files. */
function joinStreams(texts: readonly string[]): string {
  let out = '';
  for (const text of texts) {
    if (text === '') continue;
    if (out !== '') {
      if (!out.endsWith('\n')) out += '\n';
      // A directive may follow only an explicit document end.
      if (text.startsWith('%')) out += '...\n';
      else if (!/^---(?:[ \t\r\n]|$)/.test(text)) out += '---\n';
    }
    out += text;
  }
  return out;
}

export function injectSources(
  sources: readonly InputSource[],
  context: MutationContext,
): InjectResult {
  const perSource = sources.map((source) => ({ source, documents: readSource(source) }));
  const all = perSource.flatMap((s) => s.documents);
  const namespaces = namespaceMetadata(all);
  const warnings: string[] = [];
  const injected: InjectedDocument[] = [];

  for (const doc of all) {
    const where = `${doc.source.name}: ${doc.label}`;
    if (doc.value !== null && !isRecord(doc.value)) {
      warnings.push(`${doc.source.name}: document ${doc.number} is not an object; passed through`);
      continue;
    }
    let output: unknown = doc.value;
    const found: InjectedDocument[] = [];
    try {
      for (const site of podSites(doc.value)) {
        const label = site.owner === doc.value ? doc.label : labelOf(site.owner, doc.number);
        const namespace = namespaceOf(site.owner);
        const inInput = namespace === undefined ? undefined : namespaces.get(namespace);
        const mutation = mutatePod(site.pod, {
          ...context,
          namespaceAnnotations:
            inInput === undefined ? context.namespaceAnnotations : inInput.annotations,
        });
        for (const message of mutation.messages) {
          warnings.push(`${doc.source.name}: ${label}: ${message}`);
        }
        // Offline there is no proxy yet to order; the webhook orders it at admission.
        const meshed = meshAddedAtAdmission(site.pod, inInput);
        if (meshed !== null && mutation.outcome === 'mutated') {
          warnings.push(
            `${doc.source.name}: ${label}: ${meshed.mesh === 'istio' ? 'Istio' : 'Linkerd'} will add its proxy at admission (${meshed.why}); only the webhook, seeing it then, orders the proxy after the app`,
          );
        }
        found.push({ label, file: doc.source.name, mutation });
        if (mutation.pod !== site.pod) {
          const owner = replacePod(site.owner, site.podPath, mutation.pod);
          output = replaceAt(output, site.ownerPath, owner);
        }
      }
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      warnings.push(`${where}: cannot be processed (${reason}); passed through unchanged`);
      continue;
    }
    doc.output = output;
    injected.push(...found);
  }

  let yamlText: string | undefined;
  return {
    documents: injected,
    warnings,
    yaml() {
      // Once: writing may add warnings.
      yamlText ??= joinStreams(
        perSource.map(({ source, documents }) => {
          if (documents.length === 0) return source.text;
          return documents
            .map((doc) =>
              writeDocument(doc, (message) =>
                warnings.push(`${source.name}: ${doc.label}: ${message}`),
              ),
            )
            .join('');
        }),
      );
      return yamlText;
    },
    json() {
      // Empty documents are not objects: kubectl refuses a null item.
      const kept = all.filter((d) => d.output !== null);
      const outputs = kept.map((d) => defined(d.output));
      const body =
        outputs.length === 1 ? outputs[0] : { apiVersion: 'v1', kind: 'List', items: outputs };
      try {
        return `${jsonText(body, 2)}\n`;
      } catch (error) {
        // Name the document: .inf and .nan have no JSON.
        const bad = kept.find((d) => {
          try {
            jsonText(d.output);
            return false;
          } catch {
            return true;
          }
        });
        const where = bad === undefined ? '' : `${bad.source.name}: ${bad.label}: `;
        throw new InputError(`${where}${(error as Error).message}; use -o yaml`);
      }
    },
  };
}
