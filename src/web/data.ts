/**
 * What the operations page reads and does, through the functions the command line uses (status,
 * deliveries list/show/resolve, replay through the daemon's queue): the one module of web/ that
 * touches the store.
 */
import { errorsCsvOf } from '../ops/audit.js';
import type { Config } from '../config/config.js';
import { type Detail, detail, resolveDelivery } from '../ops/deliveries.js';
import { queuedOutcome, queueReplay, type ReplayOutcome } from '../ops/replay.js';
import { type Status, status } from '../ops/status.js';
import type { DeliveryFilter, Listed, Store } from '../store/types.js';

export interface WebData {
  status(): Promise<Status>;
  deliveries(filter: DeliveryFilter): Promise<Listed[]>;
  detail(id: string): Promise<Detail>;
  errorsCsv(id: string): Promise<{ name: string; content: string } | undefined>;
  /** queues the replay for the daemon's loop and waits up to `waitMs` for it: undefined if it has not run by then */
  replay(id: string, actor: string, waitMs: number): Promise<ReplayOutcome | undefined>;
  resolve(id: string, note: string, actor: string): Promise<boolean>;
}

export function webData(store: Store, config: Config): WebData {
  return {
    status: () => status(store, config),
    deliveries: (filter) => store.audit.list(filter),
    detail: (id) => detail(store, config, id),
    errorsCsv: async (id) => {
      const rec = await store.delivery(id);
      return rec && errorsCsvOf(rec);
    },
    replay: async (id, actor, waitMs) => {
      const { request } = await queueReplay(store, id, actor);
      for (const until = Date.now() + waitMs; Date.now() < until; await new Promise((r) => setTimeout(r, 200))) {
        const outcome = await queuedOutcome(store, request);
        if (outcome) return outcome;
      }
      return undefined;
    },
    resolve: (id, note, actor) => resolveDelivery(store, id, note, actor),
  };
}
