import { Command, InvalidArgumentError, Option } from 'commander';
import { ROLES, type Role, type Scope } from '../auth/tokens.ts';
import { CreditError } from '../ledger/errors.ts';
import { ACCOUNT_TYPES, type AccountType } from '../ledger/enums.ts';
import { duration, eventId, instant, listLimit, organizationId, scopes, wholeNumber } from './arguments.ts';
import { balanceCommand, grantCommand } from './credits.ts';
import { CliFailure, EXIT_CANNOT_RUN, EXIT_REFUSED, cliConfig } from './environment.ts';
import { auditCommand, resetCommand, sweepCommand, tokenCommand } from './housekeeping.ts';
import { createOrganizationCommand, listOrganizationsCommand, showOrganizationCommand } from './organizations.ts';
import { createOutput, type Output } from './output.ts';
import { listWebhooksCommand, retryWebhookCommand } from './webhooks.ts';

function accountType(value: string): AccountType {
  const type = value.toUpperCase() as AccountType;
  if (!ACCOUNT_TYPES.includes(type)) throw new InvalidArgumentError(`expected one of ${ACCOUNT_TYPES.join(', ')}.`);
  return type;
}

function role(value: string): Role {
  if (!(ROLES as readonly string[]).includes(value))
    throw new InvalidArgumentError(`expected one of ${ROLES.join(', ')}.`);
  return value as Role;
}

/** A command about one organization, named by `--org`. */
function organizationCommand(program: Command, name: string, description: string, run: (id: string) => Promise<void>) {
  program
    .command(name)
    .description(description)
    .requiredOption('--org <id>', 'organization id', organizationId)
    .action((options: { org: string }) => run(options.org));
}

/**
 * The `credits` command line. Each command opens the database the server uses (DATABASE_URL, or
 * the embedded one in DATA_DIR), runs the same ledger function the API would, and exits.
 */
export function buildProgram(): Command {
  const program = new Command('credits')
    .description('Operate the credit ledger: organizations, grants, balances, tokens, housekeeping and the audit.')
    .option('--json', 'print JSON instead of tables')
    .showSuggestionAfterError(true)
    .configureHelp({ sortSubcommands: false });
  const output = (): Output => createOutput(Boolean(program.opts<{ json?: boolean }>().json));

  const org = program.command('org').description('create, list and show organizations');
  org
    .command('create')
    .description('create an organization; its id is printed alone on the last line')
    .requiredOption('--name <name>', 'display name')
    .requiredOption('--plan <planId>', 'plan id (free, starter, pro, studio)')
    .option('--anchor <date>', 'billing cycle anchor (default: now)', instant)
    .option('--external-id <id>', "the customer's id in the host application (a retry returns the same organization)")
    .action((options: { name: string; plan: string; anchor?: Date; externalId?: string }) =>
      createOrganizationCommand(cliConfig(), output(), options),
    );
  org
    .command('list')
    .description('organizations, oldest first')
    .option('--limit <n>', 'at most this many (1 to 10000)', listLimit, 100)
    .action((options: { limit: number }) => listOrganizationsCommand(cliConfig(), output(), options));
  org
    .command('show')
    .description('plan, billing cycle and balance by account type')
    .argument('<id>', 'organization id', organizationId)
    .action((id: string) => showOrganizationCommand(cliConfig(), output(), id));

  program
    .command('grant')
    .description('grant credits, as the API grantCredits does')
    .requiredOption('--org <id>', 'organization id', organizationId)
    .addOption(
      new Option('--type <type>', `account type: ${ACCOUNT_TYPES.join(', ')}`)
        .argParser(accountType)
        .makeOptionMandatory(),
    )
    .requiredOption('--amount <n>', 'credits to grant', wholeNumber)
    .requiredOption('--reason <text>', 'why (kept in the journal)')
    .option('--expires <date>', 'expiry, for PROMOTIONAL and REFERRAL credits', instant)
    .option('--key <idempotencyKey>', 'a retry with the same key returns the first grant (default: a new key)')
    .action(
      (options: { org: string; type: AccountType; amount: number; reason: string; expires?: Date; key?: string }) =>
        grantCommand(cliConfig(), output(), options),
    );

  organizationCommand(
    program,
    'balance',
    'balance by account type in consumption order, and each lot with its expiry',
    (id) => balanceCommand(cliConfig(), output(), id),
  );

  program
    .command('token')
    .description("print a JWT signed with AUTH_SECRET (outside production: the server's development secret)")
    .addOption(new Option('--role <role>', `member, service or admin`).argParser(role).makeOptionMandatory())
    .option('--org <id>', 'organization (members and services)', organizationId)
    .option('--ttl <duration>', 'lifetime such as 30m, 12h, 30d', duration, '1h')
    .option('--subject <subject>', 'who the token stands for (default: cli-<role>)')
    .option(
      '--scope <scopes>',
      'what the token may do, comma-separated: generation (price, reserve, settle, balance), read, billing (packs, plans, grants)',
      scopes,
    )
    .action((options: { role: Role; org?: string; ttl: string; subject?: string; scope?: Scope[] }) =>
      tokenCommand(cliConfig(), output(), options),
    );

  organizationCommand(
    program,
    'reset',
    "start an organization's billing cycle now, if its current one has ended",
    (id) => resetCommand(cliConfig(), output(), id),
  );

  program
    .command('sweep')
    .description('expire due lots, refund expired reservations and start due cycles now')
    .action(() => sweepCommand(cliConfig(), output()));

  const webhooks = program.command('webhooks').description("an organization's webhook deliveries");
  webhooks
    .command('list')
    .description('the webhook and its deliveries, newest first: status, attempts, last answer, next attempt')
    .requiredOption('--org <id>', 'organization id', organizationId)
    .option('--limit <n>', 'at most this many (1 to 10000)', listLimit, 20)
    .action((options: { org: string; limit: number }) => listWebhooksCommand(cliConfig(), output(), options));
  webhooks
    .command('retry')
    .description('send a delivery again (failed, cancelled or delivered) with a fresh series of attempts')
    .requiredOption('--org <id>', 'organization id', organizationId)
    .requiredOption('--event <id>', 'the alert event whose delivery to retry', eventId)
    .action((options: { org: string; event: string }) => retryWebhookCommand(cliConfig(), output(), options));

  program
    .command('audit')
    .description('check the ledger against its journal; exit code 0 consistent, 1 inconsistent, 2 could not run')
    .action(async () => {
      process.exitCode = await auditCommand(cliConfig(), output());
    });

  return program;
}

/** Runs the command line; every failure is one line on stderr and an exit code, never a stack. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  program.exitOverride();
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (error) {
    const { message, code } = failure(error);
    if (message) process.stderr.write(`${message}\n`);
    return code;
  }
}

function failure(error: unknown): { message: string | null; code: number } {
  const commanderCode = (error as { code?: unknown }).code;
  if (typeof commanderCode === 'string' && commanderCode.startsWith('commander.')) {
    // Commander has printed its one line already (or the help, for --help, which exits 0).
    return { message: null, code: (error as { exitCode: number }).exitCode };
  }
  if (error instanceof CliFailure) return { message: error.message, code: error.exitCode };
  if (error instanceof CreditError) return { message: `error: ${error.message}`, code: EXIT_REFUSED };
  const detail = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  return { message: `error: ${detail.split('\n')[0]}`, code: EXIT_CANNOT_RUN };
}
