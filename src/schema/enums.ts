import { builder } from './builder.ts';

// Enum values keep the domain's order (consumption priority for account types).
export const CreditAccountTypeEnum = builder.enumType('CreditAccountType', {
  description: 'Where credits came from; consumed in this order.',
  values: ['SUBSCRIPTION', 'PURCHASED', 'PROMOTIONAL', 'REFERRAL'] as const,
});

export const OutputTypeEnum = builder.enumType('OutputType', { values: ['IMAGE', 'VIDEO', 'TEXT'] as const });

export const ModelTierEnum = builder.enumType('ModelTier', { values: ['DRAFT', 'STANDARD', 'PREMIUM'] as const });

export const ResolutionEnum = builder.enumType('Resolution', {
  values: ['SD_480P', 'HD_720P', 'FHD_1080P', 'UHD_4K'] as const,
});

export const ReservationStatusEnum = builder.enumType('ReservationStatus', {
  values: ['PENDING', 'CAPTURED', 'REFUNDED'] as const,
});
