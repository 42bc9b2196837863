// Copies the bundled sample deliveries into the example partners' inboxes, as a partner upload would,
// then waits out the example's settle time: inboxd reads a file only once it has been still that long.
import { cpSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import YAML from 'yaml';
import { parseDuration } from '../dist/config/units.js';

const samples = new URL('../config/samples/', import.meta.url).pathname;
const root = new URL('../var/partners/', import.meta.url).pathname;
const config = YAML.parse(readFileSync(new URL('../config/inboxd.example.yaml', import.meta.url), 'utf8'));
for (const partner of readdirSync(samples)) {
  const inbox = join(root, partner, 'inbox');
  mkdirSync(inbox, { recursive: true });
  for (const file of readdirSync(join(samples, partner))) {
    cpSync(join(samples, partner, file), join(inbox, file));
    console.log(`uploaded ${partner}/inbox/${file}`);
  }
}
const settle = parseDuration(config.settle_time ?? '500ms') ?? 0;
console.log(`waiting ${settle} ms, the settle time`);
await sleep(settle + 100);
