/** Types of campaign.js (plain JavaScript: `npm run soak` runs it without a build). */
export interface CampaignOptions {
  dir: string;
  kills?: number;
  uploads?: number;
  seed?: number;
  largeRows?: number[];
  log?: (line: string) => void;
}

export interface CampaignResult {
  seed: number;
  dir: string;
  kills: number;
  uploads: number;
  decidedUnderFire: number;
  kinds: Record<string, number>;
  aims: Record<string, number>;
  outcomes: Record<string, number>;
  /** error-level log lines of the daemons */
  errors: Record<string, unknown>[];
  /** differences between the crashed tree and the clean one */
  problems: string[];
  ms: number;
}

export function runCampaign(opts: CampaignOptions): Promise<CampaignResult>;
export const CLI: string;
