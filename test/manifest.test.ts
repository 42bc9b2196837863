/** The manifest: control totals (record count, sums), its sha256 and its `file`, end to end through the CLI. */
import { promises as fsp } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { fixture, nameFor, row, rowsOf, runCli, SLOW } from './helpers/fixture.js';

describe.concurrent('control totals', SLOW, () => {
  const cases: [string, Record<string, unknown>, string][] = [
    ['record count', { records: 4 }, 'RECORD_COUNT_MISMATCH'],
    ['sum', { sums: { qty: 37 } }, 'CONTROL_TOTAL_MISMATCH'],
    ['sha256', { sha256: 'a'.repeat(64) }, 'MANIFEST_CHECKSUM_MISMATCH'],
    ['file naming another file', { file: nameFor(9) }, 'BAD_MANIFEST'],
    ['file with a directory', { file: `../${nameFor(1)}` }, 'BAD_MANIFEST'],
    ['file with an absolute path', { file: `/tmp/${nameFor(2)}` }, 'BAD_MANIFEST'],
    ['file with a Windows directory', { file: `..\\${nameFor(2)}` }, 'BAD_MANIFEST'],
    ['sum only inherited through __proto__', { sums: JSON.parse('{"__proto__": {"qty": 48}}') }, 'BAD_MANIFEST'],
    ['sum for a column that is no control total', { sums: { qty: 48, unit_cost: '4.50' } }, 'BAD_MANIFEST'],
    ['no sum for a control-total column', { sums: {} }, 'BAD_MANIFEST'],
    ['records not a number', { records: '3' }, 'BAD_MANIFEST'],
  ];
  it.for(cases)('%s mismatch -> rejected, table unchanged', async ([, manifest, code], t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1 });
    await fx.runOnce();
    const before = fx.rows();
    const d = await fx.makeDelivery({ seq: 2, rows: rowsOf(3, 5), manifest });
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    expect(fx.rows()).toEqual(before);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ status: 'rejected', code, file: d.name });
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`].sort());
    expect(fx.query('SELECT seq FROM dedupe')).toEqual([{ seq: 1 }]);
  });

  it('an unreadable manifest is BAD_MANIFEST', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, manifestText: '{"file": "inventory_' });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'BAD_MANIFEST' });
    expect(fx.rows()).toEqual([]);
  });

  it('amount sums are decimals compared in minor units', async (t) => {
    const fx = await fixture(t, { flow: { totals: ['qty', 'unit_cost'] } });
    await fx.makeDelivery({ seq: 1, rows: [row(1, { UnitCost: '1.25' }), row(2, { UnitCost: '2.5' })], manifest: { sums: { qty: 23, unit_cost: '3.75' } } });
    expect((await fx.runOnce()).code).toBe(0);
    expect((await fx.readJson('outbox', `${nameFor(1)}.ack.json`)).sums).toEqual({ qty: 23, unit_cost: 375 });
    await fx.makeDelivery({ seq: 2, rows: [row(1, { UnitCost: '1.25' })], manifest: { sums: { qty: 11, unit_cost: 1.26 } } });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'CONTROL_TOTAL_MISMATCH' });
  });

  it('a header-only file with records 0 is accepted and applies nothing', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, rows: [] });
    expect((await fx.runOnce()).code).toBe(0);
    expect(await fx.readJson('outbox', `${d.name}.ack.json`)).toMatchObject({ status: 'accepted', records: 0, sums: { qty: 0 } });
    expect(fx.rows()).toEqual([]);
  });
});

describe.concurrent('exact totals (issue 11.1)', SLOW, () => {
  it('sums are exact where doubles are not: 9007199254740991 + 2 - 9007199254740991 is 2', async (t) => {
    const fx = await fixture(t);
    const rows = [row(1, { Quantity: '9007199254740991' }), row(2, { Quantity: '2' }), row(3, { Quantity: '-9007199254740991' })];
    await fx.makeDelivery({ seq: 1, rows, manifest: { sums: { qty: 1 } } }); // what a double-based sum says
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'CONTROL_TOTAL_MISMATCH', reason: 'the sum of "qty" is 2, the manifest says 1' });
    const d = await fx.makeDelivery({ seq: 2, rows, manifest: { sums: { qty: 2 } } });
    expect((await fx.runOnce()).code).toBe(0);
    expect((await fx.readJson('outbox', `${d.name}.ack.json`)).sums).toEqual({ qty: 2 });
    expect(fx.query('SELECT CAST(qty AS TEXT) AS qty FROM inventory ORDER BY sku').map((r) => r.qty)).toEqual(['9007199254740991', '2', '-9007199254740991']);
  });

  it('integers and amounts beyond 2^53 are stored exactly, and their sums are read and written exactly', async (t) => {
    const fx = await fixture(t, { flow: { totals: ['qty', 'unit_cost'] } });
    const rows = [row(1, { Quantity: '9223372036854775807', UnitCost: '92233720368547758.07' }), row(2, { Quantity: '9007199254740993', UnitCost: '0.01' })];
    const name = nameFor(1);
    // Beyond 2^53 (and int64) in the manifest: JSON.parse would round it to 9232379236109516800 either way; the amount as text.
    const manifestText = `{"file": "${name}", "records": 2, "sums": {"qty": 9232379236109516800, "unit_cost": "92233720368547758.08"}}\n`;
    const d = await fx.makeDelivery({ seq: 1, rows, manifestText });
    const run = await fx.runOnce();
    expect(run.code, run.stdout).toBe(0);
    expect(fx.query('SELECT CAST(qty AS TEXT) AS qty, CAST(unit_cost AS TEXT) AS unit_cost FROM inventory ORDER BY sku')).toEqual([
      { qty: '9223372036854775807', unit_cost: '9223372036854775807' }, { qty: '9007199254740993', unit_cost: '1' },
    ]);
    // The ACK's sums as exact JSON digits, not the nearest double.
    const ack = await fx.readText('outbox', `${d.name}.ack.json`);
    expect(ack).toMatch(/"qty": 9232379236109516800,\s*"unit_cost": 9223372036854775808\s*}/);
    const show = await runCli(['deliveries', 'show', fx.query('SELECT id FROM deliveries')[0]!.id, '--config', fx.configPath]);
    expect(show.stdout).toMatch(/found\s+2\s+9232379236109516800\s+92233720368547758\.08/);

    // One more than the manifest says, in the last digit: a double cannot tell them apart.
    const off = `{"file": "${nameFor(2)}", "records": 2, "sums": {"qty": 9232379236109516801, "unit_cost": "92233720368547758.08"}}\n`;
    await fx.makeDelivery({ seq: 2, rows, manifestText: off });
    expect((await fx.runOnce()).code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'CONTROL_TOTAL_MISMATCH', reason: 'the sum of "qty" is 9232379236109516800, the manifest says 9232379236109516801' });
  });

  it('a value outside 64 bits is a row error, not a rounded number', async (t) => {
    const fx = await fixture(t);
    await fx.makeDelivery({ seq: 1, rows: [row(1), row(2, { Quantity: '9223372036854775808' }), row(3, { UnitCost: '-92233720368547758.09' })] });
    expect((await fx.runOnce()).code).toBe(1);
    expect((await fx.errorReport()).errors).toMatchObject([
      { line: 3, column: 'Quantity', reason: '"9223372036854775808" is out of range (-9223372036854775808 to 9223372036854775807)' },
      { line: 4, column: 'UnitCost', reason: '"-92233720368547758.09" is out of range (-92233720368547758.08 to 92233720368547758.07)' },
    ]);
    expect(fx.rows()).toEqual([]);
  });
});

describe.concurrent('what a partner cannot see (issue 11.8)', SLOW, () => {
  it('a manifest with a UTF-8 byte-order mark is accepted, like the CSV and the sidecar', async (t) => {
    const fx = await fixture(t);
    const name = nameFor(1);
    const manifest = { file: name, records: 3, sums: { qty: 36 } };
    const d = await fx.makeDelivery({ seq: 1, bom: true, sidecar: { text: '\uFEFFplaceholder' }, manifestText: `\uFEFF${JSON.stringify(manifest)}\n` });
    // The sidecar with a mark of its own too, over the real checksum.
    await fsp.writeFile(fx.path('inbox', d.sidecar), `\uFEFF${d.sha256}  ${name}\r\n`);
    await fsp.utimes(fx.path('inbox', d.sidecar), new Date(Date.now() - 60_000), new Date(Date.now() - 60_000));
    const run = await fx.runOnce();
    expect(run.code, run.stdout).toBe(0);
    expect(await fx.readJson('outbox', `${name}.ack.json`)).toMatchObject({ status: 'accepted', records: 3, sums: { qty: 36 } });
  });

  it('invisible characters in quoted partner text are shown, not hidden in the reason', async (t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, manifest: { file: `${nameFor(1)}\u200B` } });
    expect((await fx.runOnce()).code).toBe(1);
    const report = await fx.errorReport();
    expect(report).toMatchObject({ code: 'BAD_MANIFEST', reason: `the manifest is for "${d.name}<U+200B>", not "${d.name}"` });

    const fx2 = await fixture(t);
    await fx2.makeDelivery({ seq: 1, manifestText: '{"file": \u202E"x"}' });
    expect((await fx2.runOnce()).code).toBe(1);
    const bad = await fx2.errorReport();
    expect(bad.code).toBe('BAD_MANIFEST');
    expect(bad.reason).toContain('<U+202E>');
    expect(bad.reason).not.toContain('\u202E');
  });
});
