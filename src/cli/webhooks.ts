import { systemClock } from '../clock.ts';
import type { Config } from '../config.ts';
import { NotFoundError } from '../ledger/errors.ts';
import { findOrganization } from '../ledger/organizations.ts';
import { listWebhookDeliveries, retryWebhookDelivery, type WebhookDelivery } from '../ledger/webhook-deliveries.ts';
import { findOrganizationWebhook } from '../ledger/webhooks.ts';
import { withDatabase } from './environment.ts';
import { fields, table, type Output } from './output.ts';

function deliveryJson(delivery: WebhookDelivery) {
  return {
    eventId: delivery.eventId,
    status: delivery.status,
    attempts: delivery.attempts,
    lastAttemptAt: delivery.lastAttemptAt,
    lastHttpStatus: delivery.lastHttpStatus,
    lastError: delivery.lastError,
    nextAttemptAt: delivery.nextAttemptAt,
    deliveredAt: delivery.deliveredAt,
    createdAt: delivery.createdAt,
  };
}

/** The organization's webhook and its latest deliveries, newest first (as `webhookDeliveries`). */
export async function listWebhooksCommand(
  config: Config,
  out: Output,
  options: { org: string; limit: number },
): Promise<void> {
  await withDatabase(config, {}, async ({ db }) => {
    if (!(await findOrganization(db, options.org))) throw new NotFoundError('No such organization.');
    const webhook = await findOrganizationWebhook(db, options.org);
    const { deliveries } = await listWebhookDeliveries(db, options.org, options.limit, null);
    out.print(
      { webhook: webhook ? { id: webhook.id, url: webhook.url } : null, deliveries: deliveries.map(deliveryJson) },
      () => {
        out.line(
          webhook
            ? fields([
                ['webhook', webhook.id],
                ['url', webhook.url],
              ])
            : 'No webhook is set.',
        );
        out.line();
        out.line(
          deliveries.length === 0
            ? 'No deliveries.'
            : table(
                ['EVENT', 'STATUS', 'ATTEMPTS', 'LAST STATUS', 'NEXT ATTEMPT', 'LAST ERROR'],
                deliveries.map((d) => [
                  d.eventId,
                  d.status,
                  d.attempts,
                  d.lastHttpStatus,
                  d.nextAttemptAt,
                  d.lastError,
                ]),
              ),
        );
      },
    );
  });
}

/**
 * Makes one delivery due now with a fresh series of attempts; the running servers send it within
 * a second (their dispatchers look for due deliveries every second).
 */
export async function retryWebhookCommand(
  config: Config,
  out: Output,
  options: { org: string; event: string },
): Promise<void> {
  await withDatabase(config, {}, async ({ db }) => {
    const delivery = await retryWebhookDelivery(
      db,
      { organizationId: options.org, eventId: options.event },
      systemClock.now(),
    );
    out.print(deliveryJson(delivery), () =>
      out.line(
        fields([
          ['event', delivery.eventId],
          ['status', delivery.status],
          ['next attempt', delivery.nextAttemptAt],
        ]),
      ),
    );
  });
}
