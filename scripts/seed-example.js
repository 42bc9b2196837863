// Copies the bundled sample deliveries into the example partners' inboxes, as a partner upload would.
import { cpSync, mkdirSync, readdirSync, utimesSync } from 'node:fs';
import { join } from 'node:path';

const samples = new URL('../config/samples/', import.meta.url).pathname;
const root = new URL('../var/partners/', import.meta.url).pathname;
const past = new Date(Date.now() - 60_000); // older than the settle time
for (const partner of readdirSync(samples)) {
  const inbox = join(root, partner, 'inbox');
  mkdirSync(inbox, { recursive: true });
  for (const file of readdirSync(join(samples, partner))) {
    cpSync(join(samples, partner, file), join(inbox, file));
    utimesSync(join(inbox, file), past, past);
    console.log(`uploaded ${partner}/inbox/${file}`);
  }
}
