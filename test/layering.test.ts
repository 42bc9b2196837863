/**
 * The layering, checked from the sources. Folders follow the data flow, and a module imports only from
 * its own folder or from folders below it in FLOW (type-only imports vanish after compilation and are
 * free). Steps of the pipeline take values and return values or streams: they reach for no store,
 * logger or orchestrator. No module imports itself back through a cycle, and only `store/` talks to a
 * database driver.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = join(import.meta.dirname, '..', 'src');
/** Lowest first. `shared` is the files at the top of src/ (errors, log, ...), except the entry point cli.ts. */
const FLOW = ['shared', 'config', 'notify', 'formats', 'pgp', 'pipeline', 'store', 'ingest', 'remote', 'ops', 'web', 'observe', 'daemon', 'cli'];
const DRIVERS = ['better-sqlite3', 'pg', 'pg-copy-streams'];

const modules = (readdirSync(SRC, { recursive: true }) as string[]).filter((f) => f.endsWith('.ts')).map((f) => f.replace(/\.ts$/, ''));
const layerOf = (mod: string) => (mod === 'cli' ? 'cli' : mod.includes('/') ? mod.split('/')[0]! : 'shared');

interface Import { target: string; value: boolean }

function importsOf(mod: string): Import[] {
  const text = readFileSync(join(SRC, `${mod}.ts`), 'utf8');
  const out: Import[] = [];
  for (const m of text.matchAll(/^(?:import|export)\s+(type\s+)?(?:([^'"]*?)\s+from\s+)?'([^']+)';/gm)) {
    const [, typeOnly, clause, spec] = m;
    const allTypes = clause !== undefined && /^\{[^}]*\}$/.test(clause.trim()) && clause.replace(/[{}\s]/g, '').split(',').filter(Boolean).every((n) => n.startsWith('type'));
    out.push({ target: resolve(mod, spec!), value: !typeOnly && !allTypes });
  }
  for (const m of text.matchAll(/import\(\s*'([^']+)'\s*\)/g)) out.push({ target: resolve(mod, m[1]!), value: true });
  return out;
}

/** A relative specifier as a module name (`pipeline/claim`); a package as its name. */
function resolve(mod: string, spec: string): string {
  if (!spec.startsWith('.')) return spec.startsWith('node:') ? spec : spec.split('/').slice(0, spec.startsWith('@') ? 2 : 1).join('/');
  return normalize(relative(SRC, join(SRC, dirname(mod), spec))).replace(/\.js$/, '');
}

const local = (i: Import) => modules.includes(i.target);

describe('layering', () => {
  it('every module sits in a folder of the flow', () => {
    expect(importsOf('ingest/delivery').map((i) => i.target)).toEqual(expect.arrayContaining(['pipeline/answer', 'pipeline/claim', 'pipeline/verify'])); // the reader works
    expect(modules.filter((m) => !FLOW.includes(layerOf(m)))).toEqual([]);
  });

  it('imports follow the flow: from the same folder or one below', () => {
    const against = modules.flatMap((m) => importsOf(m).filter((i) => i.value && local(i) && FLOW.indexOf(layerOf(i.target)) > FLOW.indexOf(layerOf(m))).map((i) => `${m} -> ${i.target}`));
    expect(against).toEqual([]);
  });

  it('pipeline steps import no store, logger or orchestrator', () => {
    const steps = modules.filter((m) => layerOf(m) === 'pipeline' || layerOf(m) === 'formats');
    expect(steps.length).toBeGreaterThan(5);
    const reach = steps.flatMap((m) => importsOf(m).filter((i) => i.value && (i.target === 'log' || ['store', 'ingest', 'daemon', 'observe'].includes(layerOf(i.target)))).map((i) => `${m} -> ${i.target}`));
    expect(reach).toEqual([]);
  });

  it('only store/ imports a database driver', () => {
    const outside = modules.filter((m) => layerOf(m) !== 'store').flatMap((m) => importsOf(m).filter((i) => DRIVERS.includes(i.target)).map((i) => `${m} -> ${i.target}`));
    expect(outside).toEqual([]);
  });

  it('has no import cycles', () => {
    const graph = new Map(modules.map((m) => [m, importsOf(m).filter((i) => i.value && local(i)).map((i) => i.target)]));
    const cycles: string[] = [];
    const done = new Set<string>();
    const visit = (m: string, path: string[]) => {
      if (path.includes(m)) {
        cycles.push([...path.slice(path.indexOf(m)), m].join(' -> '));
        return;
      }
      if (done.has(m)) return;
      for (const next of graph.get(m) ?? []) visit(next, [...path, m]);
      done.add(m);
    };
    for (const m of modules) visit(m, []);
    expect(cycles).toEqual([]);
  });
});
