/** Configuration validation through the real CLI: errors name the file and the key path; exit 78. */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { fixture, MAPPING, runCli, SLOW } from './helpers/fixture.js';

describe.concurrent('configuration errors stop inboxd before it touches anything', SLOW, () => {
  it.for<[string, Parameters<typeof fixture>[1], RegExp]>([
    ['a key column not in the mapping', { flow: { key: ['nope'] } }, /partners\.acme\.flows\.inventory\.key\[0\]: "nope" is not a column of the mapping/],
    ['a control total that is not a number column', { flow: { totals: ['currency'] } }, /partners\.acme\.flows\.inventory\.totals\[0\]: .*only integer and amount/],
    ['an unknown top-level key', { config: { setle_time: '2s' } }, /setle_time/],
    ['an unknown flow key', { flow: { tabel: 'x' } }, /partners\.acme\.flows\.inventory.*tabel/],
    ['a misspelt required key: both problems, the one left out "missing"', { flow: { tabel: 'inventory', table: undefined } }, /2 problems:\n {2}partners\.acme\.flows\.inventory\.table: missing\n {2}partners\.acme\.flows\.inventory: Unrecognized key: "tabel"/],
    ['an unknown csv key', { flow: { csv: { delimeter: ';' } } }, /partners\.acme\.flows\.inventory\.csv.*delimeter/],
    ['a bad duration', { settle_time: 'soon' }, /settle_time: expected a duration/],
    ['a bad table name', { flow: { table: 'inventory; DROP TABLE x' } }, /partners\.acme\.flows\.inventory\.table/],
    ['a pattern without a seq group', { flow: { pattern: '^inv_(\\d+)\\.csv$' } }, /partners\.acme\.flows\.inventory\.pattern: .*\(\?<seq>/],
    ['an invalid regular expression', { flow: { pattern: '^inv_(?<seq>\\d+' } }, /partners\.acme\.flows\.inventory\.pattern: not a valid regular expression/],
    ['an unknown encoding', { flow: { csv: { encoding: 'klingon' } } }, /partners\.acme\.flows\.inventory\.csv\.encoding: unknown encoding/],
    ['a bad max_bad_rows', { flow: { max_bad_rows: 'ten' } }, /partners\.acme\.flows\.inventory\.max_bad_rows/],
    ['a bad partner id, stating the rule', { config: { partners: { 'Acme Corp': { flows: {} } } } }, /partners\.Acme Corp: "Acme Corp" is not a valid id: partner ids are lower-case letters, digits, _ and -/],
    ['an unknown mapping type (naming the mapping file and line)', { mapping: MAPPING.replace('qty,Quantity,integer', 'qty,Quantity,number') }, /partners\.acme\.flows\.inventory\.mapping: .*acme-inventory\.csv: line 4: unknown type "number"/],
    ['a column mapped twice', { mapping: `${MAPPING}qty,Qty2,integer,,,\n` }, /acme-inventory\.csv: line 11: column "qty" is mapped twice/],
    ['a missing mapping file', { flow: { mapping: 'nowhere.csv' } }, /partners\.acme\.flows\.inventory\.mapping: .*nowhere\.csv/],
    ['a window whose cron expression is not one', { flow: { window: { cron: '61 2 * * *', duration: '1h' } } }, /partners\.acme\.flows\.inventory\.window\.cron: expected a cron expression such as "0 2 \* \* \*"/],
    ['a sweep schedule that is not a cron expression', { config: { sweep: 'every minute' } }, /sweep: expected a cron expression \(5 or 6 fields\)/],
  ])('%s', async ([, opts, message], t) => {
    const fx = await fixture(t, opts);
    await fx.makeDelivery({ seq: 1 });
    const run = await fx.runOnce();
    expect(run.code).toBe(78);
    expect(run.stderr).toContain(fx.configPath);
    expect(run.stderr).toMatch(/CONFIG_INVALID/);
    expect(run.stderr).toMatch(message);
    expect(run.stderr).not.toMatch(/^\s+at /m); // no stack trace
    // Nothing was created or read.
    expect(fx.listDir('outbox')).toEqual([]);
    expect(fx.listDir('inbox')).toHaveLength(3);
    await expect(fsp.stat(fx.database)).rejects.toThrow();
  });

  it('invalid YAML, a duplicate key and a missing file are refused too', async (t) => {
    const fx = await fixture(t);
    await fsp.writeFile(fx.configPath, 'root: partners\nroot: again\n');
    let run = await fx.runOnce();
    expect(run.code).toBe(78);
    expect(run.stderr).toMatch(/not valid YAML/);
    await fsp.writeFile(fx.configPath, 'root: [unclosed\n');
    run = await fx.runOnce();
    expect(run.code).toBe(78);
    run = await runCli(['run', '--once', '--config', join(fx.dir, 'missing.yaml')]);
    expect(run.code).toBe(78);
    expect(run.stderr).toContain('missing.yaml');
  });

  it('check-config validates without running; a valid configuration runs', async (t) => {
    const fx = await fixture(t);
    const ok = await runCli(['check-config', '--config', fx.configPath]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain('ok (1 partners, 1 flows)');
    await fx.writeConfig({ flow: { key: ['sku', 'nope'] } });
    const bad = await runCli(['check-config', '--config', fx.configPath]);
    expect(bad.code).toBe(78);
    expect(bad.stderr).toContain('partners.acme.flows.inventory.key[1]');
  });

  it('check-config finds what run finds: a missing OpenPGP key file (78 naming it)', async (t) => {
    const fx = await fixture(t, { config: { pgp: { keys: ['keys/ours.asc'] } } });
    for (const r of [await runCli(['check-config', '--config', fx.configPath]), await fx.runOnce()]) {
      expect(r.code).toBe(78);
      expect(r.stderr).toMatch(new RegExp(`^inboxd: KEY_INVALID: ${join(fx.dir, 'keys', 'ours.asc')}: cannot read key file \\(.*ENOENT`));
    }
  });

  it('a YAML alias bomb is refused with 78, not expanded (no stack trace)', async (t) => {
    const fx = await fixture(t);
    const levels = 'abcdefghi'.split('').map((l, i, all) => `${l}: &${l} [${i === 0 ? Array(9).fill('"lol"').join(',') : Array(9).fill(`*${all[i - 1]}`).join(',')}]`);
    await fsp.writeFile(fx.configPath, `${levels.join('\n')}\nroot: partners\n`);
    for (const r of [await runCli(['check-config', '--config', fx.configPath]), await fx.runOnce()]) {
      expect(r.code).toBe(78);
      expect(r.stderr).toMatch(new RegExp(`^inboxd: CONFIG_INVALID: ${fx.configPath}: not accepted: .*alias.* \\(aliases expand to at most 100 nodes\\)\\n$`));
    }
  });

  it('the bundled example configuration is valid', async () => {
    const run = await runCli(['check-config', '--config', new URL('../config/inboxd.example.yaml', import.meta.url).pathname]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
  });

  it('a key that no longer matches the existing table is a configuration error, not a delivery retried forever', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    expect((await fx.runOnce()).code).toBe(0);
    await fx.writeConfig({ flow: { key: ['sku'] } });
    const d = await fx.makeDelivery({ seq: 2 });
    const run = await fx.runOnce();
    expect(run.code).toBe(78);
    expect(run.stderr).toMatch(/CONFIG_INVALID: table "inventory" exists with the key \(sku, warehouse\), but the configuration says \(sku\)/);
    expect(fx.listDir('inbox')).toEqual([...d.files].sort());
    expect(fx.rows()).toHaveLength(3);
  });

  it('a usage error exits 64', async () => {
    expect((await runCli(['run', '--once', '--no-such-option'])).code).toBe(64);
    expect((await runCli(['frobnicate'])).code).toBe(64);
  });
});
