import { GraphQLError, Kind, getOperationAST, type FragmentDefinitionNode, type SelectionSetNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { GraphQLContext } from '../context.ts';

/** A token bucket per caller: `burst` operations at once, refilled at `perSecond`. */
export interface MutationRateLimit {
  perSecond: number;
  burst: number;
  /** Milliseconds on a monotonic clock; tests pass their own to avoid sleeping. */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  updatedAtMs: number;
}

// Buckets that have refilled completely hold no information; they are dropped at most this often
// so that a stream of one-off callers cannot grow the map without bound.
const EVICTION_INTERVAL_MS = 60_000;

export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private readonly now: () => number;
  private evictedAtMs: number;

  constructor(private readonly limit: MutationRateLimit) {
    if (!(limit.perSecond > 0) || !(limit.burst >= 1))
      throw new Error('A rate limit needs perSecond > 0 and burst >= 1.');
    this.now = limit.now ?? (() => performance.now());
    this.evictedAtMs = this.now();
  }

  /** How many callers have a bucket (full buckets are dropped from time to time). */
  get size(): number {
    return this.buckets.size;
  }

  /**
   * Takes `cost` tokens from `key`'s bucket; when it holds fewer, takes none and says when to
   * retry (null: never, the request costs more than a whole burst).
   */
  take(key: string, cost: number): { allowed: true } | { allowed: false; retryAfterSeconds: number | null } {
    const nowMs = this.now();
    this.evictFullBuckets(nowMs);
    const bucket = this.buckets.get(key) ?? { tokens: this.limit.burst, updatedAtMs: nowMs };
    bucket.tokens = Math.min(
      this.limit.burst,
      bucket.tokens + ((nowMs - bucket.updatedAtMs) / 1000) * this.limit.perSecond,
    );
    bucket.updatedAtMs = nowMs;
    this.buckets.set(key, bucket);
    if (cost <= bucket.tokens) {
      bucket.tokens -= cost;
      return { allowed: true };
    }
    if (cost > this.limit.burst) return { allowed: false, retryAfterSeconds: null };
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((cost - bucket.tokens) / this.limit.perSecond)) };
  }

  /** Gives back `cost` tokens taken from `key` for a request that another bucket then refused. */
  giveBack(key: string, cost: number): void {
    const bucket = this.buckets.get(key);
    if (bucket) bucket.tokens = Math.min(this.limit.burst, bucket.tokens + cost);
  }

  private evictFullBuckets(nowMs: number): void {
    if (nowMs - this.evictedAtMs < EVICTION_INTERVAL_MS) return;
    this.evictedAtMs = nowMs;
    for (const [key, bucket] of this.buckets) {
      if (bucket.tokens + ((nowMs - bucket.updatedAtMs) / 1000) * this.limit.perSecond >= this.limit.burst)
        this.buckets.delete(key);
    }
  }
}

/** Root fields an operation selects, through fragments; each aliased copy counts. */
function countRootFields(
  selectionSet: SelectionSetNode,
  fragments: Map<string, FragmentDefinitionNode>,
  seen = new Set<string>(),
): number {
  let count = 0;
  for (const selection of selectionSet.selections) {
    if (selection.kind === Kind.FIELD) {
      if (!selection.name.value.startsWith('__')) count += 1;
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      count += countRootFields(selection.selectionSet, fragments, seen);
    } else {
      const fragment = fragments.get(selection.name.value);
      if (fragment && !seen.has(fragment.name.value)) {
        seen.add(fragment.name.value);
        count += countRootFields(fragment.selectionSet, fragments, seen);
      }
    }
  }
  return count;
}

export interface MutationRateLimits {
  /** Members: per token (its subject, role and organization). Null: members are not limited. */
  member: MutationRateLimit | null;
  /**
   * Services and admins: per organization for a service (all its tokens share one bucket, so a
   * new token buys nothing), per subject for an admin. A generation backend sends every
   * reservation of its organization with one service token, so this limit sits far above what the
   * ledger can do for one organization: it stops a runaway loop, not a busy studio.
   * Null: services and admins share the member limit (when there is one).
   */
  service: MutationRateLimit | null;
  /**
   * All members of one organization together, on top of each member token's own limit, so that a
   * second `sub` in the same organization cannot double its allowance. Null: no such limit.
   */
  organization?: MutationRateLimit | null;
}

type BucketKind = 'member' | 'service' | 'organization';

interface BucketChoice {
  kind: BucketKind;
  key: string;
  limit: MutationRateLimit;
  /** What the refusal says the limit applies to. */
  scope: string;
}

/** The buckets a caller draws from, each with its limit; a request must fit in all of them. */
function bucketsOf(viewer: NonNullable<GraphQLContext['viewer']>, limits: MutationRateLimits): BucketChoice[] {
  if (viewer.role !== 'member' && limits.service) {
    const key =
      viewer.role === 'service' ? `service\u0000${viewer.organizationId ?? ''}` : `admin\u0000${viewer.subject}`;
    return [
      {
        kind: 'service',
        key,
        limit: limits.service,
        scope: viewer.role === 'service' ? 'the services of this organization' : 'this admin',
      },
    ];
  }
  const choices: BucketChoice[] = [];
  if (limits.member) {
    choices.push({
      kind: 'member',
      key: `${viewer.role}\u0000${viewer.organizationId ?? ''}\u0000${viewer.subject}`,
      limit: limits.member,
      scope: 'this token',
    });
  }
  if (viewer.role === 'member' && viewer.organizationId && limits.organization) {
    choices.push({
      kind: 'organization',
      key: `organization\u0000${viewer.organizationId}`,
      limit: limits.organization,
      scope: "this organization's members",
    });
  }
  return choices;
}

/**
 * Limits each caller to a number of operations, counting every root field of a query or
 * mutation (reads cost the database too; subscriptions have their own caps, see
 * SubscriptionSlots). A request over the limit is refused as a whole before anything executes,
 * with `extensions.code` RATE_LIMITED, HTTP 429 and a Retry-After header. Unauthenticated
 * requests are not counted: they are refused by the resolvers without any database work.
 */
export function useMutationRateLimit(limits: MutationRateLimits): Plugin<GraphQLContext> {
  const buckets: Record<BucketKind, TokenBuckets | null> = {
    member: limits.member ? new TokenBuckets(limits.member) : null,
    service: limits.service ? new TokenBuckets(limits.service) : null,
    organization: limits.organization ? new TokenBuckets(limits.organization) : null,
  };
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const viewer = args.contextValue.viewer;
      if (!viewer) return;
      const choices = bucketsOf(viewer, limits);
      if (choices.length === 0) return;
      const operation = getOperationAST(args.document, args.operationName);
      if (operation?.operation !== 'mutation' && operation?.operation !== 'query') return;
      const fragments = new Map<string, FragmentDefinitionNode>();
      for (const definition of args.document.definitions) {
        if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
      }
      const cost = countRootFields(operation.selectionSet, fragments);
      if (cost === 0) return;
      const taken: BucketChoice[] = [];
      for (const choice of choices) {
        const result = buckets[choice.kind]!.take(choice.key, cost);
        if (result.allowed) {
          taken.push(choice);
          continue;
        }
        // A refused request costs nothing: what the earlier buckets gave is handed back.
        for (const earlier of taken) buckets[earlier.kind]!.giveBack(earlier.key, cost);
        setResultAndStopExecution({ errors: [refusal(cost, choice, result.retryAfterSeconds)] });
        return;
      }
    },
  };
}

function refusal(cost: number, choice: BucketChoice, retryAfterSeconds: number | null): GraphQLError {
  if (retryAfterSeconds === null) {
    return new GraphQLError(
      `This request holds ${cost} operations; ${choice.scope} may send at most ${choice.limit.burst} at once.`,
      {
        extensions: { code: 'RATE_LIMITED', http: { status: 429 } },
      },
    );
  }
  return new GraphQLError(`Too many requests for ${choice.scope}; retry in ${retryAfterSeconds} s.`, {
    extensions: {
      code: 'RATE_LIMITED',
      retryAfterSeconds,
      http: { status: 429, headers: { 'Retry-After': String(retryAfterSeconds) } },
    },
  });
}
