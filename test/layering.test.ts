/**
 * The layering, checked from the sources: steps take values and return values or streams; they do not
 * reach for the store, the configuration loader, the logger, the metrics or the daemon. And no module
 * imports itself back through a cycle.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = join(import.meta.dirname, '..', 'src');
const modules = readdirSync(SRC).filter((f) => f.endsWith('.ts')).map((f) => f.replace(/\.ts$/, ''));

/** Value imports only: `import type` and `import { type X }`-only lines vanish after compilation. */
function imports(mod: string): string[] {
  const text = readFileSync(join(SRC, `${mod}.ts`), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/^import\s+(type\s+)?(?:([^'"]*?)\s+from\s+)?'\.\/([\w-]+)\.js';/gm)) {
    const [, typeOnly, clause, target] = m;
    const allTypes = clause !== undefined && /^\{[^}]*\}$/.test(clause.trim()) && clause.replace(/[{}\s]/g, '').split(',').every((n) => n.startsWith('type'));
    if (!typeOnly && !allTypes) out.push(target!);
  }
  return out;
}

const STEPS = ['naming', 'discover', 'claim', 'verify', 'parse', 'map', 'stage', 'stage-worker', 'answer', 'pgp', 'remote', 'windows', 'fsx', 'retry', 'units', 'mapping', 'backlog', 'http', 'table'];
const ORCHESTRATION = ['store', 'config', 'log', 'metrics', 'daemon', 'run', 'delivery', 'cli'];

describe('layering', () => {
  it('every step named here exists', () => {
    for (const s of STEPS) expect(modules).toContain(s);
  });

  for (const step of STEPS) {
    it(`${step} imports no store, config loader, logger, metrics or orchestrator`, () => {
      expect(imports(step).filter((i) => ORCHESTRATION.includes(i))).toEqual([]);
    });
  }

  it('has no import cycles', () => {
    const graph = new Map(modules.map((m) => [m, imports(m).filter((i) => modules.includes(i))]));
    const cycles: string[] = [];
    const visit = (m: string, path: string[]) => {
      if (path.includes(m)) {
        cycles.push([...path.slice(path.indexOf(m)), m].join(' -> '));
        return;
      }
      for (const next of graph.get(m) ?? []) visit(next, [...path, m]);
    };
    for (const m of modules) visit(m, []);
    expect(cycles).toEqual([]);
  });
});
