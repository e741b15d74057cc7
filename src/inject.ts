// The offline mutation: YAML or JSON documents in, the same documents out with
// the webhook's mutation applied to every pod and pod template.

import { isMap, isSeq, parseAllDocuments, type Document } from 'yaml';
import { mutatePod, type Mutation, type MutationContext } from './core/mutate.ts';
import { isRecord } from './core/types.ts';
import { locatePod, replacePod } from './core/workloads.ts';
import { diffPatch, type PatchOperation } from './webhook/admission.ts';

export class InputError extends Error {}

export interface InjectedDocument {
  /** Kind/name, for messages. */
  label: string;
  input: unknown;
  output: unknown;
  mutation: Mutation | null;
  /** Path from the document to its pod spec, when it has one. */
  podPath: readonly string[] | null;
}

export interface InjectResult {
  documents: InjectedDocument[];
  /** Messages for stderr, each naming its document. */
  warnings: string[];
  yaml(): string;
  json(): string;
}

function labelOf(document: unknown, index: number): string {
  if (!isRecord(document)) return `document ${index + 1}`;
  const metadata = isRecord(document['metadata']) ? document['metadata'] : {};
  const name = metadata['name'] ?? metadata['generateName'] ?? `#${index + 1}`;
  return `${String(document['kind'] ?? 'object')}/${String(name)}`;
}

function unescapePointer(segment: string): string {
  return segment.replace(/~1/g, '/').replace(/~0/g, '~');
}

function pathOf(pointer: string): (string | number)[] {
  return pointer
    .split('/')
    .slice(1)
    .map(unescapePointer)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

/** Applies a JSON patch to a YAML document in place, keeping comments and layout elsewhere. */
function patchYamlDocument(document: Document, patch: readonly PatchOperation[]): void {
  for (const op of patch) {
    const path = pathOf(op.path);
    if (op.op === 'remove') {
      document.deleteIn(path);
    } else if (op.op === 'add' || op.op === 'replace') {
      const parentPath = path.slice(0, -1);
      const parent = parentPath.length === 0 ? document.contents : document.getIn(parentPath, true);
      if (parentPath.length > 0 && !isMap(parent) && !isSeq(parent)) {
        document.setIn(parentPath, document.createNode({}));
      }
      document.setIn(path, document.createNode(op.value));
    } else {
      throw new Error(`unexpected patch operation ${op.op}`);
    }
  }
}

export function injectDocuments(text: string, context: MutationContext): InjectResult {
  const parsed = parseAllDocuments(text, { prettyErrors: true, uniqueKeys: false });
  if (!Array.isArray(parsed)) throw new InputError('input is not YAML or JSON');
  const yamlDocs = parsed.filter((doc) => doc.contents !== null);
  for (const doc of yamlDocs) {
    const error = doc.errors[0];
    if (error !== undefined) throw new InputError(`cannot parse input: ${error.message}`);
  }
  const values: unknown[] = yamlDocs.map((doc) => doc.toJS({ maxAliasCount: 100 }));

  // Namespace documents in the same input act as they would in a cluster.
  const namespaceAnnotations = new Map<string, Record<string, string>>();
  for (const value of values) {
    if (isRecord(value) && value['kind'] === 'Namespace' && isRecord(value['metadata'])) {
      const name = value['metadata']['name'];
      const annotations = value['metadata']['annotations'];
      if (typeof name === 'string' && isRecord(annotations)) {
        namespaceAnnotations.set(name, annotations as Record<string, string>);
      }
    }
  }

  const warnings: string[] = [];
  const documents = values.map((input, index): InjectedDocument => {
    const label = labelOf(input, index);
    const location = locatePod(input);
    if (location === null) return { label, input, output: input, mutation: null, podPath: null };
    const metadata = isRecord(input) && isRecord(input['metadata']) ? input['metadata'] : {};
    const namespace = typeof metadata['namespace'] === 'string' ? metadata['namespace'] : undefined;
    const mutation = mutatePod(location.pod, {
      ...context,
      namespaceAnnotations:
        namespace === undefined
          ? context.namespaceAnnotations
          : namespaceAnnotations.get(namespace),
    });
    for (const message of mutation.messages) warnings.push(`${label}: ${message}`);
    const output =
      mutation.pod === location.pod
        ? input
        : replacePod(input as Record<string, unknown>, location.path, mutation.pod);
    return { label, input, output, mutation, podPath: location.path };
  });

  return {
    documents,
    warnings,
    yaml() {
      return yamlDocs
        .map((doc, index) => {
          const { input, output } = documents[index]!;
          if (output !== input) patchYamlDocument(doc, diffPatch(input, output));
          const text = doc.toString({ lineWidth: 0 });
          return index === 0 || text.startsWith('---') ? text : `---\n${text}`;
        })
        .join('');
    },
    json() {
      const outputs = documents.map((d) => d.output);
      const body =
        outputs.length === 1 ? outputs[0] : { apiVersion: 'v1', kind: 'List', items: outputs };
      return `${JSON.stringify(body, null, 2)}\n`;
    },
  };
}
