import { ACCOUNT_TYPES, MODEL_TIERS, OUTPUT_TYPES, RESERVATION_STATUSES } from '../ledger/enums.ts';
import { RESOLUTIONS } from '../ledger/pricing.ts';
import { builder } from './builder.ts';

// Each enum takes its values, and their order, from the ledger's list, which reads the database
// enum: the API cannot offer a value the database would refuse, nor list them in another order.

export const CreditAccountTypeEnum = builder.enumType('CreditAccountType', {
  description: 'Where credits came from; consumed in this order.',
  values: ACCOUNT_TYPES,
});

export const OutputTypeEnum = builder.enumType('OutputType', { values: OUTPUT_TYPES });

export const ModelTierEnum = builder.enumType('ModelTier', { values: MODEL_TIERS });

export const ResolutionEnum = builder.enumType('Resolution', { values: RESOLUTIONS });

export const ReservationStatusEnum = builder.enumType('ReservationStatus', { values: RESERVATION_STATUSES });
