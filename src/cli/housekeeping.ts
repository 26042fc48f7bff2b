import { SUBJECT_LENGTH_MAX, isAcceptableSubject, signToken, type Role, type Scope } from '../auth/tokens.ts';
import { systemClock } from '../clock.ts';
import type { Config } from '../config.ts';
import { auditLedger } from '../ledger/audit.ts';
import type { Violation } from '../ledger/audit-checks.ts';
import { InvalidInputError, NotFoundError } from '../ledger/errors.ts';
import { findOrganization } from '../ledger/organizations.ts';
import { resetCycle, sweepUntilIdle } from '../ledger/sweeper.ts';
import { durationSeconds } from './arguments.ts';
import { EXIT_REFUSED, databaseLabel, signingKey, withDatabase } from './environment.ts';
import { fields, type Output } from './output.ts';

export async function tokenCommand(
  config: Config,
  out: Output,
  options: { role: Role; org?: string; ttl: string; subject?: string; scope?: Scope[] },
): Promise<void> {
  if (options.role === 'admin' && options.org) {
    throw new InvalidInputError('An admin token acts for every organization; leave --org out.', 'org');
  }
  if (options.role !== 'admin' && !options.org)
    throw new InvalidInputError(`A ${options.role} token needs --org.`, 'org');
  // A token the service would refuse is no use: it must live no longer than the role may.
  const lifetimeMax = config.tokenPolicy.maxLifetimeSeconds[options.role];
  if (durationSeconds(options.ttl) > lifetimeMax) {
    throw new InvalidInputError(
      `A ${options.role} token may live at most ${lifetimeMax} s (TOKEN_MAX_LIFETIME_SECONDS, ADMIN_TOKEN_MAX_LIFETIME_SECONDS).`,
      'ttl',
    );
  }
  // Without scopes a member or service token holds all of its role's rights, and where scopes are
  // required (production) the service refuses it: such a token is not signed.
  if (!options.scope && options.role !== 'admin' && config.tokenPolicy.scopesRequired) {
    throw new InvalidInputError(
      `A ${options.role} token needs --scope here (TOKEN_SCOPES_REQUIRED); for example --scope generation,read.`,
      'scope',
    );
  }
  const subject = options.subject ?? `cli-${options.role}`;
  if (!isAcceptableSubject(subject)) {
    throw new InvalidInputError(
      `--subject must be printable text of 1 to ${SUBJECT_LENGTH_MAX} characters.`,
      'subject',
    );
  }
  const token = await signToken(
    {
      subject,
      role: options.role,
      organizationId: options.org ?? null,
      scopes: options.scope ?? null,
      expiresIn: options.ttl,
      issuer: config.tokenPolicy.issuer,
      audience: config.tokenPolicy.audience,
    },
    signingKey(config),
  );
  out.print(
    {
      token,
      role: options.role,
      organizationId: options.org ?? null,
      scopes: options.scope ?? null,
      subject,
      expiresIn: options.ttl,
    },
    () => out.line(token),
  );
}

export async function resetCommand(config: Config, out: Output, organizationId: string): Promise<void> {
  await withDatabase(config, {}, async ({ db }) => {
    const ctx = { db, clock: systemClock };
    if (!(await findOrganization(db, organizationId))) throw new NotFoundError('No such organization.');
    const reset = await resetCycle(ctx, organizationId);
    const organization = (await findOrganization(db, organizationId))!;
    out.print(
      { organizationId, reset, cycleStartsAt: organization.cycleStartsAt, cycleEndsAt: organization.cycleEndsAt },
      () =>
        out.line(
          reset
            ? `Started the billing cycle ${organization.cycleStartsAt.toISOString()} to ${organization.cycleEndsAt.toISOString()}.`
            : `No cycle was due: the current one ends ${organization.cycleEndsAt.toISOString()}.`,
        ),
    );
  });
}

export async function sweepCommand(config: Config, out: Output): Promise<void> {
  await withDatabase(config, {}, async ({ db }) => {
    const result = await sweepUntilIdle({ db, clock: systemClock });
    out.print(result, () =>
      out.line(
        fields([
          ['refunded reservations', result.refundedReservations],
          ['reset organizations', result.resetOrganizations],
          ['organizations with expired lots', result.expiredLotOrganizations],
          ['failed items', result.failedItems],
        ]),
      ),
    );
  });
}

function describe(violation: Violation): string {
  const where = [`organization ${violation.organizationId}`];
  if (violation.lotId) where.push(`lot ${violation.lotId}`);
  if (violation.reservationId) where.push(`reservation ${violation.reservationId}`);
  return `${where.join(' ')}: ${violation.message}`;
}

/**
 * Recomputes every lot, reservation and organization from the journal. Returns the exit code:
 * 0 consistent, 1 violations found (each printed); failing to run at all is exit code 2.
 */
export async function auditCommand(config: Config, out: Output): Promise<number> {
  // No statement timeout: the audit reads the whole journal, which may take long on a big one.
  return withDatabase(
    config,
    { timeouts: { statementTimeoutMs: 0, idleInTransactionTimeoutMs: 0 } },
    async ({ db }) => {
      // One snapshot for every check, so writes committed by a running server between two of the
      // audit's statements cannot look like a violation.
      const violations = await db.transaction((tx) => auditLedger(tx), {
        isolationLevel: 'repeatable read',
        accessMode: 'read only',
      });
      const where = databaseLabel(config);
      out.print({ consistent: violations.length === 0, database: where, violations }, () => {
        for (const violation of violations) out.line(describe(violation));
        if (violations.length > 0)
          out.line(`audit: ${violations.length} violation${violations.length === 1 ? '' : 's'} (${where})`);
        else out.line(`audit: ledger consistent (${where})`);
      });
      return violations.length > 0 ? EXIT_REFUSED : 0;
    },
  );
}
