import { InvalidInputError, NotFoundError } from '../ledger/errors.ts';
import { LEDGER_PAGE_DEFAULT, LEDGER_PAGE_MAX } from '../ledger/limits.ts';
import { findOrganization } from '../ledger/organizations.ts';
import { requireIntInRange } from '../ledger/validation.ts';
import {
  listWebhookDeliveries,
  type DeliveryPosition,
  type WebhookDelivery,
  type WebhookDeliveryStatus,
} from '../ledger/webhook-deliveries.ts';
import {
  PREVIOUS_SECRET_VALIDITY_MS,
  findOrganizationWebhook,
  removeOrganizationWebhook,
  rotateWebhookSecret,
  setOrganizationWebhook,
  type OrganizationWebhook,
  type WebhookWithSecret,
} from '../ledger/webhooks.ts';
import { WEBHOOK_ATTEMPTS_MAX } from '../webhooks/backoff.ts';
import { WEBHOOK_URL_LENGTH_MAX, checkWebhookUrl } from '../webhooks/url-policy.ts';
import { allow, asQueryInput, authorizeOrganization, noSuchOrganization } from './authorization.ts';
import { builder } from './builder.ts';
import { OrganizationType } from './organizations.ts';

// Operators set webhooks (a billing scope claim, when the token has one) and read their outcomes.
const adminWrites = allow({ roles: ['admin'], scopes: ['billing'] });
const adminReads = allow({ roles: ['admin'], scopes: ['read', 'billing'] });

export const OrganizationWebhookType = builder.objectRef<OrganizationWebhook>('OrganizationWebhook').implement({
  description:
    "Where the organization's balance alert events are sent, as signed POST requests (Standard Webhooks). " +
    'The signing secret is shown only when it is made (setOrganizationWebhook, rotateWebhookSecret).',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The webhook; a new one is made each time a URL is set.' }),
    url: t.exposeString('url', { description: 'The receiver, as normalised when it was set.' }),
    createdAt: t.field({ type: 'DateTime', description: 'When the URL was set.', resolve: (w) => w.createdAt }),
    secretRotatedAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When the signing secret was last rotated; null if never.',
      resolve: (w) => w.secretRotatedAt,
    }),
    previousSecretExpiresAt: t.field({
      type: 'DateTime',
      nullable: true,
      description:
        'Until when deliveries also carry a signature by the secret the last rotation replaced; null when they do not.',
      resolve: (w) => w.previousSecretExpiresAt,
    }),
  }),
});

const STATUS_DESCRIPTIONS: Record<WebhookDeliveryStatus, string> = {
  PENDING: 'Not delivered yet: an attempt is due at nextAttemptAt (or in flight).',
  DELIVERED: 'The receiver answered an attempt with a 2xx status.',
  FAILED: `Every one of the ${WEBHOOK_ATTEMPTS_MAX} attempts failed; \`credits webhooks retry\` starts a new series.`,
  CANCELLED: 'Not sent: the webhook was removed before the delivery succeeded.',
};

const WebhookDeliveryStatusEnum = builder.enumType('WebhookDeliveryStatus', {
  description: 'Where a webhook delivery stands.',
  values: Object.fromEntries(
    Object.entries(STATUS_DESCRIPTIONS).map(([status, description]) => [status, { description }]),
  ) as Record<WebhookDeliveryStatus, { description: string }>,
});

const WebhookDeliveryType = builder.objectRef<WebhookDelivery>('WebhookDelivery').implement({
  description:
    'The sending of one balance alert event to the webhook: at least once, first right after the event ' +
    `committed, then with backoff (about 5 s, then growing with jitter), at most ${WEBHOOK_ATTEMPTS_MAX} attempts over about a day.`,
  fields: (t) => ({
    eventId: t.exposeID('eventId', {
      description: 'The event sent, also its webhook-id header: receivers deduplicate by it.',
    }),
    status: t.field({ type: WebhookDeliveryStatusEnum, resolve: (d) => d.status }),
    attempts: t.exposeInt('attempts', {
      description: 'Attempts made so far (a retry by an operator starts again from 0).',
    }),
    lastAttemptAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When the last attempt started.',
      resolve: (d) => d.lastAttemptAt,
    }),
    lastHttpStatus: t.exposeInt('lastHttpStatus', {
      nullable: true,
      description:
        "The receiver's status code at the last attempt; null when it gave none (timeout, connection refused).",
    }),
    lastError: t.exposeString('lastError', {
      nullable: true,
      description: 'Why the last attempt failed, in words; null after a success.',
    }),
    nextAttemptAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When the next attempt is due; null once delivered, failed or cancelled.',
      resolve: (d) => d.nextAttemptAt,
    }),
    deliveredAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When an attempt succeeded.',
      resolve: (d) => d.deliveredAt,
    }),
    createdAt: t.field({
      type: 'DateTime',
      description: 'When the event was written (and the delivery with it).',
      resolve: (d) => d.createdAt,
    }),
  }),
});

const WebhookDeliveryConnection = builder.connectionObject(
  {
    type: WebhookDeliveryType,
    name: 'WebhookDeliveryConnection',
    edgesNullable: { list: false, items: false },
    nodeNullable: false,
  },
  { name: 'WebhookDeliveryEdge' },
);

// A cursor names its organization and a position (creation time and event id), and is refused
// for any other organization, as the ledger's are.
const CURSOR = /^webhookDelivery:([0-9a-f-]{36}):([0-9TZ:.-]{24}):([0-9a-f-]{36})$/;

function encodeCursor(delivery: WebhookDelivery): string {
  const text = `webhookDelivery:${delivery.organizationId}:${delivery.createdAt.toISOString()}:${delivery.eventId}`;
  return Buffer.from(text).toString('base64url');
}

function decodeCursor(cursor: string, organizationId: string): DeliveryPosition {
  const match = cursor.length <= 200 ? CURSOR.exec(Buffer.from(cursor, 'base64url').toString('utf8')) : null;
  const createdAt = match ? new Date(match[2]!) : null;
  if (!match || match[1] !== organizationId || !createdAt || Number.isNaN(createdAt.getTime())) {
    throw new InvalidInputError("after is not a cursor from this organization's webhook deliveries.", 'after');
  }
  return { createdAt, eventId: match[3]! };
}

builder.queryField('webhookDeliveries', (t) =>
  t.field({
    type: WebhookDeliveryConnection,
    description:
      "The organization's webhook deliveries, newest first (admin). An id that names no organization is " +
      'bad input (BAD_USER_INPUT on organizationId).',
    authScopes: adminReads,
    args: {
      organizationId: t.arg.id({ required: true, description: 'The organization whose deliveries to list.' }),
      first: t.arg.int({
        required: false,
        description: `Page size, 1 to ${LEDGER_PAGE_MAX} (default ${LEDGER_PAGE_DEFAULT}).`,
      }),
      after: t.arg.string({ required: false, description: 'An endCursor from an earlier page of this list.' }),
    },
    resolve: (_root, args, ctx) =>
      asQueryInput(async () => {
        const organizationId = authorizeOrganization(ctx, args.organizationId);
        const first = requireIntInRange(args.first ?? LEDGER_PAGE_DEFAULT, 1, LEDGER_PAGE_MAX, 'first');
        const after = args.after ? decodeCursor(args.after, organizationId) : null;
        const page = await listWebhookDeliveries(ctx.db, organizationId, first, after);
        if (page.deliveries.length === 0 && !(await findOrganization(ctx.db, organizationId))) {
          throw noSuchOrganization();
        }
        const edges = page.deliveries.map((delivery) => ({ cursor: encodeCursor(delivery), node: delivery }));
        return {
          edges,
          pageInfo: {
            hasNextPage: page.hasNextPage,
            hasPreviousPage: after !== null,
            startCursor: edges[0]?.cursor ?? null,
            endCursor: edges.at(-1)?.cursor ?? null,
          },
        };
      }),
  }),
);

builder.objectField(OrganizationType, 'webhook', (t) =>
  t.field({
    type: OrganizationWebhookType,
    nullable: true,
    description: "Where the organization's alert events are sent (admin only); null when nowhere.",
    authScopes: adminReads,
    resolve: (org, _args, ctx) => findOrganizationWebhook(ctx.db, org.id),
  }),
);

const SetOrganizationWebhookInput = builder.inputType('SetOrganizationWebhookInput', {
  description: "A receiver for the organization's balance alert events.",
  fields: (t) => ({
    organizationId: t.id({ required: true, description: 'The organization whose events are sent.' }),
    url: t.string({
      required: true,
      description:
        `An https URL of at most ${WEBHOOK_URL_LENGTH_MAX} characters, without user name or password. In production ` +
        'it must name a public host: loopback, private and link-local addresses are refused, here and again ' +
        'after name resolution at each delivery.',
    }),
  }),
});

const OrganizationWebhookInput = builder.inputType('OrganizationWebhookInput', {
  description: 'The organization whose webhook is meant.',
  fields: (t) => ({ organizationId: t.id({ required: true, description: 'The organization.' }) }),
});

const WebhookWithSecretFields = (name: string, description: string) =>
  builder.objectRef<WebhookWithSecret>(name).implement({
    description,
    fields: (t) => ({
      webhook: t.field({ type: OrganizationWebhookType, description: 'The webhook.', resolve: (p) => p.webhook }),
      secret: t.exposeString('secret', {
        description:
          'The signing secret, `whsec_` and base64, as the Standard Webhooks specification has it. Shown only here: ' +
          'keep it with the receiver, which verifies each delivery with it.',
      }),
    }),
  });

const SetOrganizationWebhookSuccess = WebhookWithSecretFields(
  'SetOrganizationWebhookSuccess',
  'The webhook now in use, with its new signing secret. A webhook set before is replaced; its pending deliveries go to this one.',
);

const RotateWebhookSecretSuccess = WebhookWithSecretFields(
  'RotateWebhookSecretSuccess',
  `The webhook with a new signing secret; for ${PREVIOUS_SECRET_VALIDITY_MS / 3_600_000} hours deliveries carry a ` +
    'signature by the previous secret as well.',
);

const RemoveOrganizationWebhookSuccess = builder
  .objectRef<{ webhook: OrganizationWebhook }>('RemoveOrganizationWebhookSuccess')
  .implement({
    description: 'The webhook, no longer used; its pending deliveries were cancelled.',
    fields: (t) => ({
      webhook: t.field({
        type: OrganizationWebhookType,
        description: 'The removed webhook.',
        resolve: (p) => p.webhook,
      }),
    }),
  });

builder.mutationFields((t) => ({
  setOrganizationWebhook: t.field({
    type: SetOrganizationWebhookSuccess,
    description:
      "Sends the organization's balance alert events to a URL (admin). Answers the signing secret, once. " +
      'Setting a URL again replaces the webhook and its secret.',
    authScopes: adminWrites,
    errors: { types: [InvalidInputError, NotFoundError] },
    args: { input: t.arg({ type: SetOrganizationWebhookInput, required: true }) },
    resolve: (_root, { input }, ctx) => {
      const organizationId = authorizeOrganization(ctx, input.organizationId);
      const url = checkWebhookUrl(input.url, ctx.webhookUrlPolicy);
      return setOrganizationWebhook(ctx, organizationId, url.href);
    },
  }),
  rotateWebhookSecret: t.field({
    type: RotateWebhookSecretSuccess,
    description: "Gives the organization's webhook a new signing secret (admin); the old one keeps signing for a day.",
    authScopes: adminWrites,
    errors: { types: [InvalidInputError, NotFoundError] },
    args: { input: t.arg({ type: OrganizationWebhookInput, required: true }) },
    resolve: (_root, { input }, ctx) => rotateWebhookSecret(ctx, authorizeOrganization(ctx, input.organizationId)),
  }),
  removeOrganizationWebhook: t.field({
    type: RemoveOrganizationWebhookSuccess,
    description: "Stops sending the organization's alert events (admin); pending deliveries are cancelled.",
    authScopes: adminWrites,
    errors: { types: [InvalidInputError, NotFoundError] },
    args: { input: t.arg({ type: OrganizationWebhookInput, required: true }) },
    resolve: async (_root, { input }, ctx) => ({
      webhook: await removeOrganizationWebhook(ctx, authorizeOrganization(ctx, input.organizationId)),
    }),
  }),
}));
