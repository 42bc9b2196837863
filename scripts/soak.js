// npm run soak -- [KILLS=500] [--round 50] [--seed N] [--dir DIR]
// npm run soak -- --postgres [KILLS=30] [--instances 3] [--partners 8]   (several instances: scripts/soak-instances.ts)
//
// The long SIGKILL campaign: rounds of `--round` kills (test/helpers/campaign.js, the same campaign
// test/crash-campaign.test.ts runs briefly) until KILLS kills have been made. Each round feeds a fresh
// pair of trees and compares the crash tree with the clean one; passing rounds are deleted, a failing
// round's trees are kept and its seed printed (replay: --seed SEED --round N with the same N).
// Prints kills, deliveries and anything found; exits 1 when something was found.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { runCampaign } from '../test/helpers/campaign.js';

// Several instances on PostgreSQL: a campaign of its own (scripts/soak-instances.ts, TypeScript, run by vite-node).
if (process.argv.includes('--postgres')) {
  const r = spawnSync('npx', ['vite-node', 'scripts/soak-instances.ts', '--', ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const positional = args.filter((a, i) => !a.startsWith('--') && !args[i - 1]?.startsWith('--'));
const total = Number(positional[0] ?? 500);
const perRound = Number(option('round', 50));
const firstSeed = Number(option('seed', Math.floor(Math.random() * 2 ** 31)));
if (!(total > 0) || !(perRound > 0)) {
  console.error('usage: npm run soak -- [KILLS] [--round N] [--seed N] [--dir DIR]');
  process.exit(64);
}
const ownBase = option('dir') === undefined;
const base = option('dir') ?? mkdtempSync(join(tmpdir(), 'inboxd-soak-'));
mkdirSync(base, { recursive: true });

const sum = { kills: 0, uploads: 0, underFire: 0, rounds: 0, outcomes: {}, kinds: {}, aims: {}, errors: [], problems: [], ms: 0 };
const add = (into, from) => Object.entries(from).forEach(([k, n]) => (into[k] = (into[k] ?? 0) + n));
const show = (o) => Object.entries(o).map(([k, n]) => `${n} ${k}`).join(', ');
console.log(`soak: ${total} kills in rounds of ${perRound}, first seed ${firstSeed}, trees under ${base}`);

for (let round = 1; sum.kills < total; round++) {
  const kills = Math.min(perRound, total - sum.kills);
  const seed = (firstSeed + round - 1) >>> 0;
  const dir = join(base, `round-${round}`);
  const r = await runCampaign({ dir, kills, seed });
  sum.rounds++;
  sum.kills += r.kills;
  sum.uploads += r.uploads;
  sum.underFire += r.decidedUnderFire;
  sum.ms += r.ms;
  add(sum.outcomes, r.outcomes);
  add(sum.kinds, r.kinds);
  add(sum.aims, r.aims);
  sum.errors.push(...r.errors.map((e) => ({ round, ...e })));
  sum.problems.push(...r.problems.map((p) => `round ${round} (seed ${seed}, ${dir}): ${p}`));
  const verdict = r.problems.length ? `${r.problems.length} PROBLEMS, trees kept in ${dir}` : 'identical to the clean run';
  console.log(`round ${round}: seed ${seed}, ${r.kills} kills, ${r.uploads} deliveries (${show(r.outcomes)}; ${r.decidedUnderFire} decided by daemons later killed), ${Math.round(r.ms / 1000)} s: ${verdict}`);
  for (const p of r.problems) console.log(`  ${p}`);
  for (const e of r.errors) console.log(`  error-level log line (${e.run}): ${e.msg}`);
  if (!r.problems.length) rmSync(dir, { recursive: true, force: true });
  // Stop at the first problem only when asked; otherwise keep soaking to see how often it happens.
  if (r.problems.length && args.includes('--stop-on-problem')) break;
}

console.log('');
console.log(`kills:       ${sum.kills} in ${sum.rounds} rounds, ${Math.round(sum.ms / 60000)} min (${show(sum.aims)})`);
console.log(`deliveries:  ${sum.uploads} uploaded (${show(sum.kinds)}); ${sum.underFire} decided by daemons later killed, the rest by each round's last start`);
console.log(`outcomes:    ${show(sum.outcomes)}`);
console.log(`error lines: ${sum.errors.length}${sum.errors.length ? `: ${[...new Set(sum.errors.map((e) => e.msg))].join(' | ')}` : ''}`);
console.log(`found:       ${sum.problems.length ? '' : 'nothing: every round ended exactly as its clean run'}`);
for (const p of sum.problems) console.log(`  ${p}`);
if (!sum.problems.length && ownBase) rmSync(base, { recursive: true, force: true });
process.exitCode = sum.problems.length ? 1 : 0;
