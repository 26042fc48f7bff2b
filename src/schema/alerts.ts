import type { GraphQLContext } from '../context.ts';
import {
  ALERT_THRESHOLD_MAX,
  listBalanceAlerts,
  removeBalanceAlert,
  setBalanceAlert,
  type BalanceAlert,
  type DeliveredAlertEvent,
} from '../ledger/alerts.ts';
import { ALERTS_PER_ORGANIZATION_MAX } from '../ledger/alert-evaluation.ts';
import { IdempotencyConflictError, InvalidInputError, NotFoundError } from '../ledger/errors.ts';
import { findOrganization } from '../ledger/organizations.ts';
import { allow, authorizeOrganization, noSuchOrganization, organizationScope, requireViewer } from './authorization.ts';
import { builder } from './builder.ts';
import { openOrganizationStream, streamEvent } from './organization-streams.ts';
import { OrganizationType } from './organizations.ts';

export const BalanceAlertType = builder.objectRef<BalanceAlert>('BalanceAlert').implement({
  description:
    "A threshold on the organization's available credits (all account types together). It fires once " +
    'when a change takes available credits from at or above the threshold to below it, and is armed ' +
    'again when they come back to the threshold or above.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The alert; its events name it as alertId.' }),
    threshold: t.exposeInt('threshold', { description: 'Whole credits, 1 to 2,000,000,000.' }),
    armed: t.exposeBoolean('armed', {
      description:
        'True while available credits stand at or above the threshold, so the next drop below it fires; ' +
        'false once it fired (or when it was set above the balance), until they come back.',
    }),
    lastFiredAt: t.field({
      type: 'DateTime',
      nullable: true,
      description: 'When the alert last fired; null if it never did.',
      resolve: (alert) => alert.lastFiredAt,
    }),
  }),
});

export const BalanceAlertEventType = builder.objectRef<DeliveredAlertEvent>('BalanceAlertEvent').implement({
  description: 'One firing of a balance alert, written in the transaction of the change that crossed its threshold.',
  fields: (t) => ({
    id: t.exposeID('id', { description: 'The event, stable: a receiver told twice can tell by it.' }),
    alertId: t.exposeID('alertId', { description: 'The alert that fired.' }),
    threshold: t.exposeInt('threshold', { description: 'The threshold crossed, in credits.' }),
    available: t.field({
      type: 'Int',
      description: 'Available credits right after the change that crossed the threshold.',
      resolve: (event) => event.available,
    }),
    generationsLeft: t.int({
      nullable: true,
      description:
        'How many generations of modelId those available credits still pay for (one generation: count 1, ' +
        "the model's lowest resolution, one second of video). Null only when the catalog has no model to price.",
      resolve: (event) => event.generationsLeft,
    }),
    modelId: t.id({
      nullable: true,
      description:
        "The organization's most used model over the last 30 days by captured credits, or the cheapest " +
        'image model when it used none.',
      resolve: (event) => event.modelId,
    }),
    occurredAt: t.field({
      type: 'DateTime',
      description: 'When the change that crossed the threshold was made.',
      resolve: (event) => event.occurredAt,
    }),
  }),
});

builder.objectField(OrganizationType, 'balanceAlerts', (t) =>
  t.field({
    type: [BalanceAlertType],
    description: `The balance alerts the organization watches (at most ${ALERTS_PER_ORGANIZATION_MAX}), lowest threshold first.`,
    resolve: (org, _args, ctx) => listBalanceAlerts(ctx.db, org.id),
  }),
);

const SetBalanceAlertInput = builder.inputType('SetBalanceAlertInput', {
  description: 'A threshold to watch.',
  fields: (t) => ({
    organizationId: t.id({ required: true, description: 'The organization whose available credits are watched.' }),
    threshold: t.int({
      required: true,
      description: `Whole credits, 1 to ${ALERT_THRESHOLD_MAX.toLocaleString('en-US')}.`,
    }),
    idempotencyKey: t.string({
      required: true,
      description: 'A retry with the same key and threshold answers the alert it created.',
    }),
  }),
});

const RemoveBalanceAlertInput = builder.inputType('RemoveBalanceAlertInput', {
  description: 'An alert to stop watching.',
  fields: (t) => ({ alertId: t.id({ required: true, description: 'The alert.' }) }),
});

const SetBalanceAlertSuccess = builder.objectRef<{ alert: BalanceAlert }>('SetBalanceAlertSuccess').implement({
  description: 'The alert, new or the one an earlier request with the same key created.',
  fields: (t) => ({
    alert: t.field({ type: BalanceAlertType, description: 'The alert.', resolve: (payload) => payload.alert }),
  }),
});

const RemoveBalanceAlertSuccess = builder.objectRef<{ alert: BalanceAlert }>('RemoveBalanceAlertSuccess').implement({
  description: 'The alert, no longer watched; its past events remain.',
  fields: (t) => ({
    alert: t.field({ type: BalanceAlertType, description: 'The removed alert.', resolve: (payload) => payload.alert }),
  }),
});

builder.mutationFields((t) => ({
  setBalanceAlert: t.field({
    type: SetBalanceAlertSuccess,
    description:
      `Watches a threshold of available credits (service or admin; a service token needs the billing scope). ` +
      `At most ${ALERTS_PER_ORGANIZATION_MAX} per organization. A new alert is armed when available credits ` +
      'stand at or above the threshold now, otherwise it waits for them to reach it.',
    authScopes: allow({ roles: ['service', 'admin'], scopes: ['billing'] }),
    errors: { types: [InvalidInputError, NotFoundError, IdempotencyConflictError] },
    args: { input: t.arg({ type: SetBalanceAlertInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const organizationId = authorizeOrganization(ctx, input.organizationId);
      const alert = await setBalanceAlert(ctx, {
        organizationId,
        threshold: input.threshold,
        idempotencyKey: input.idempotencyKey,
      });
      return { alert };
    },
  }),
  removeBalanceAlert: t.field({
    type: RemoveBalanceAlertSuccess,
    description:
      "Stops watching an alert (service or admin; a service token needs the billing scope). Another organization's alert is not found.",
    authScopes: allow({ roles: ['service', 'admin'], scopes: ['billing'] }),
    errors: { types: [NotFoundError] },
    args: { input: t.arg({ type: RemoveBalanceAlertInput, required: true }) },
    resolve: async (_root, { input }, ctx) => {
      const alert = await removeBalanceAlert(ctx, String(input.alertId), organizationScope(requireViewer(ctx)));
      return { alert };
    },
  }),
}));

builder.subscriptionField('balanceAlert', (t) =>
  t.field({
    type: BalanceAlertEventType,
    description:
      'Every balance alert of the organization that fires from now on, once its change committed. Events ' +
      'fired while the subscription was not open are not sent again. Ends with UNAUTHENTICATED when the ' +
      'token expires; an id that names no organization is bad input (BAD_USER_INPUT on organizationId).',
    authScopes: allow({ roles: ['member', 'service', 'admin'], scopes: ['generation', 'read'] }),
    args: { organizationId: t.arg.id({ required: true, description: 'The organization.' }) },
    subscribe: (_root, args, ctx) =>
      openOrganizationStream<DeliveredAlertEvent, ReturnType<GraphQLContext['alertFeed']['subscribe']>>(
        ctx,
        args.organizationId,
        (organizationId) => ctx.alertFeed.subscribe(organizationId),
        // Registered before the organization is checked, so an event committed meanwhile is heard.
        async (organizationId) => {
          if (!(await findOrganization(ctx.db, organizationId))) throw noSuchOrganization();
        },
      ),
    resolve: (event) => streamEvent(event),
  }),
);
