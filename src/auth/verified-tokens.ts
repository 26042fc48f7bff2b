import { verifyAuthorization, type TokenPolicy, type Viewer } from './tokens.ts';

/** How many verified tokens are remembered; the least recently used is forgotten first. */
const REMEMBERED_TOKENS_MAX = 10_000;

interface Remembered {
  viewer: Viewer;
  /** Milliseconds since the epoch until which the token is accepted (its `exp` plus the skew). */
  acceptedUntilMs: number;
}

/**
 * Verifies `Authorization` headers, remembering the tokens that passed. A generation backend
 * sends every request with the same token, and checking its HMAC again (through WebCrypto's
 * thread pool) cost more server time than a whole `{ __typename }` request.
 *
 * Remembering is exact, not a relaxation: with one key and one policy, whether a token passes
 * depends only on its text and the time, and of the time-dependent claims only `exp` can turn a
 * token that passed into one that does not (`nbf` and `iat` in the future only become true, and
 * `exp - iat` is within the longest lifetime). So a remembered token is accepted until its `exp`
 * plus the allowed skew, by the same wall clock jose reads. Refused tokens are not remembered,
 * so nobody can fill the memory with garbage.
 */
export class VerifiedTokens {
  private readonly remembered = new Map<string, Remembered>();

  constructor(
    private readonly key: Uint8Array,
    private readonly policy: TokenPolicy,
    private readonly nowMs: () => number = Date.now,
  ) {}

  async verify(header: string | null | undefined): Promise<Viewer> {
    const known = header ? this.remembered.get(header) : undefined;
    if (known && this.nowMs() < known.acceptedUntilMs) {
      // Most recently used last, so the oldest entry is the first in the map.
      this.remembered.delete(header!);
      this.remembered.set(header!, known);
      return known.viewer;
    }
    if (known) this.remembered.delete(header!);
    const viewer = await verifyAuthorization(header, this.key, this.policy);
    if (header && viewer.expiresAt !== null) {
      if (this.remembered.size >= REMEMBERED_TOKENS_MAX) this.remembered.delete(this.remembered.keys().next().value!);
      this.remembered.set(header, {
        viewer,
        acceptedUntilMs: (viewer.expiresAt + this.policy.clockSkewSeconds) * 1000,
      });
    }
    return viewer;
  }
}
