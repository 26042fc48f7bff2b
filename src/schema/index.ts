// The schema entry: each module registers its types and fields on the builder when imported.
import './builder.ts';
import './errors.ts';
import './enums.ts';
import './catalog.ts';
import './balance.ts';
import './organizations.ts';
import './grants.ts';
import './reservations.ts';
import './reservation-increases.ts';
import './quotes.ts';
import './ledger.ts';
import './subscriptions.ts';
import './alerts.ts';
import './webhooks.ts';
import { builder } from './builder.ts';

export const schema = builder.toSchema({ sortSchema: false });
