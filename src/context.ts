import type { Viewer } from './auth/tokens.ts';
import type { Clock } from './clock.ts';
import type { Db } from './db/client.ts';
import type { Balance } from './ledger/balance.ts';
import type { DeliveredAlertEvent } from './ledger/alerts.ts';
import type { AlertFeed } from './realtime/alert-feed.ts';
import type { BalanceNotifier } from './realtime/balance-notifier.ts';
import type { SubscriptionSlots } from './realtime/subscription-slots.ts';
import type { WebhookUrlPolicy } from './webhooks/url-policy.ts';

/** What every resolver receives. The database handle comes from here, never from a global. */
export interface GraphQLContext {
  db: Db;
  clock: Clock;
  /** The verified caller, or null with the reason in `authFailure`. */
  viewer: Viewer | null;
  authFailure: string | null;
  /** This process's live balance feed, which subscriptions register with. */
  notifier: BalanceNotifier<Balance>;
  /** This process's live feed of committed balance alert events. */
  alertFeed: AlertFeed<DeliveredAlertEvent>;
  /** Open subscriptions per token and per connection, which subscriptions take a slot from. */
  subscriptionSlots: SubscriptionSlots;
  /** Which webhook URLs this deployment accepts. */
  webhookUrlPolicy: WebhookUrlPolicy;
  /** The WebSocket an operation arrived on; null over HTTP. */
  connection: object | null;
}
