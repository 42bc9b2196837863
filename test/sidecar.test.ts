/** The `.sha256` sidecar in every form partners produce, end to end through the CLI. */
import { describe, expect, it } from 'vitest';
import { fixture, type SidecarForm, SLOW } from './helpers/fixture.js';

describe.concurrent('sidecar forms', SLOW, () => {
  it.for<SidecarForm>(['bare', 'gnu', 'gnu-binary', 'bsd', 'upper'])('accepts the %s form', async (form, t) => {
    const fx = await fixture(t);
    const d = await fx.makeDelivery({ seq: 1, sidecar: form });
    const run = await fx.runOnce();
    expect(run.code).toBe(0);
    expect(fx.rows()).toHaveLength(3);
    expect(await fx.readJson('outbox', `${d.name}.ack.json`)).toMatchObject({ status: 'accepted', sha256: d.sha256 });
  });

  it('accepts CRLF line ends and a path before the name', async (t) => {
    const fx = await fixture(t);
    const d0 = await fx.makeDelivery({ seq: 1, sidecar: false });
    await fx.makeDelivery({ seq: 1, sidecar: { text: `${d0.sha256} *upload/outgoing/${d0.name}\r\n` } });
    expect((await fx.runOnce()).code).toBe(0);
    expect(fx.rows()).toHaveLength(3);
  });

  it.for<[string, (hex: string, name: string) => string]>([
    ['names another file (GNU)', (hex) => `${hex}  inventory_20250916T0200Z_002.csv\n`],
    ['names another file (BSD)', (hex) => `SHA256 (other.csv) = ${hex}\n`],
    ['holds no checksum', () => 'see attached\n'],
    ['is an MD5 sum', (_hex, name) => `d41d8cd98f00b204e9800998ecf8427e  ${name}\n`],
    ['holds two lines', (hex, name) => `${hex}  ${name}\n${hex}  ${name}\n`],
    ['is empty', () => ''],
  ])('BAD_SIDECAR when it %s', async ([, text], t) => {
    const fx = await fixture(t);
    const d0 = await fx.makeDelivery({ seq: 1, sidecar: false });
    const d = await fx.makeDelivery({ seq: 1, sidecar: { text: text(d0.sha256, d0.name) } });
    const run = await fx.runOnce();
    expect(run.code).toBe(1);
    expect(await fx.errorReport()).toMatchObject({ code: 'BAD_SIDECAR', file: d.name });
    expect(fx.listDir('error')).toEqual([...d.files, `${d.name}.error.json`].sort());
    expect(fx.rows()).toEqual([]);
  });
});
