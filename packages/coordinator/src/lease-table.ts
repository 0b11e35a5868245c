/**
 * Who holds which shard, in the lease server: at most one unexpired grant per
 * shard, tokens that only grow. Time is passed in (milliseconds, monotonic),
 * so the rules are easy to test.
 */

export interface Grant {
  shard: string;
  owner: string;
  token: number;
  expiresAt: number;
}

export class LeaseTable {
  private readonly grants = new Map<string, Grant>();
  private lastToken: number;

  /** `firstToken`: tokens start above it (a new server starts above any earlier one's). */
  constructor(firstToken: number) {
    this.lastToken = firstToken;
  }

  holder(shard: string, at: number): Grant | undefined {
    const grant = this.grants.get(shard);
    if (grant && grant.expiresAt <= at) {
      this.grants.delete(shard);
      return undefined;
    }
    return grant;
  }

  /** Grants the shard if nobody holds it at `at`. */
  tryGrant(shard: string, owner: string, termMs: number, at: number): Grant | null {
    if (this.holder(shard, at)) return null;
    const grant = { shard, owner, token: ++this.lastToken, expiresAt: at + termMs };
    this.grants.set(shard, grant);
    return grant;
  }

  /** Extends a grant still held under `token`; null when it was lost. */
  renew(shard: string, owner: string, token: number, termMs: number, at: number): Grant | null {
    const grant = this.holder(shard, at);
    if (!grant || grant.token !== token || grant.owner !== owner) return null;
    grant.expiresAt = at + termMs;
    return grant;
  }

  /** Frees a grant held under `token` (a stale token frees nothing). */
  release(shard: string, owner: string, token: number, at: number): boolean {
    const grant = this.holder(shard, at);
    if (!grant || grant.token !== token || grant.owner !== owner) return false;
    this.grants.delete(shard);
    return true;
  }

  /** Takes over a grant made by an earlier server (a clean handover); later tokens stay above it. */
  adopt(grant: Grant): void {
    this.grants.set(grant.shard, { ...grant });
    this.lastToken = Math.max(this.lastToken, grant.token);
  }

  /** Every grant still live at `at`. */
  live(at: number): Grant[] {
    return [...this.grants.values()].filter((grant) => grant.expiresAt > at);
  }
}
