// GraphQL documents shared by the API tests.

export const BALANCE_FIELDS = `
  organizationId available reserved version
  accounts { type priority available reserved lots { id type granted available expiresAt createdAt } }
`;

export const RESERVATION_FIELDS = `
  id organizationId status amount capturedAmount refundedAmount expiresAt
  allocations { lotId type amount }
`;

export const ERROR_FIELDS = `
  __typename
  ... on Error { message }
  ... on InvalidInputError { field }
`;

export const CREATE_ORGANIZATION = `
  mutation ($input: CreateOrganizationInput!) {
    createOrganization(input: $input) { ${ERROR_FIELDS} ... on CreateOrganizationSuccess { organization { id currentCycleStartsAt currentCycleEndsAt } } }
  }`;

export const GRANT_CREDITS = `
  mutation ($input: GrantCreditsInput!) {
    grantCredits(input: $input) { ${ERROR_FIELDS} ... on GrantCreditsSuccess { lot { id type granted available expiresAt } balance { ${BALANCE_FIELDS} } } }
  }`;

export const PURCHASE_PACK = `
  mutation ($input: PurchaseCreditPackInput!) {
    purchaseCreditPack(input: $input) { ${ERROR_FIELDS} ... on PurchaseCreditPackSuccess { lot { id type granted available expiresAt } balance { ${BALANCE_FIELDS} } } }
  }`;

export const RESERVE = `
  mutation ($input: ReserveCreditsInput!) {
    reserveCredits(input: $input) { ${ERROR_FIELDS} ... on InsufficientCreditsError { required available } ... on ReserveCreditsSuccess { reservation { ${RESERVATION_FIELDS} } balance { ${BALANCE_FIELDS} } } }
  }`;

export const CAPTURE = `
  mutation ($input: CaptureReservationInput!) {
    captureReservation(input: $input) { ${ERROR_FIELDS} ... on ReservationStateError { status } ... on CaptureReservationSuccess { reservation { ${RESERVATION_FIELDS} } balance { ${BALANCE_FIELDS} } } }
  }`;

export const REFUND = `
  mutation ($input: RefundReservationInput!) {
    refundReservation(input: $input) { ${ERROR_FIELDS} ... on ReservationStateError { status } ... on RefundReservationSuccess { reservation { ${RESERVATION_FIELDS} } balance { ${BALANCE_FIELDS} } } }
  }`;

export const EXTEND = `
  mutation ($input: ExtendReservationInput!) {
    extendReservation(input: $input) { ${ERROR_FIELDS} ... on ReservationStateError { status } ... on ExtendReservationSuccess { reservation { ${RESERVATION_FIELDS} } } }
  }`;

export const CHANGE_PLAN = `
  mutation ($input: ChangePlanInput!) {
    changePlan(input: $input) { ${ERROR_FIELDS} ... on ChangePlanSuccess { appliedImmediately effectiveAt organization { id plan { id } nextPlan { id } } } }
  }`;

export const BALANCE = `query ($id: ID!) { balance(organizationId: $id) { ${BALANCE_FIELDS} } }`;

export const QUOTE = `
  query ($id: ID!, $generation: GenerationInput!) {
    creditQuote(organizationId: $id, generation: $generation) { cost available affordable affordableCount }
  }`;

export const LEDGER = `
  query ($id: ID!, $first: Int, $after: String) {
    ledger(organizationId: $id, first: $first, after: $after) {
      edges { cursor node { id kind lotId reservationId amount reservedChange reason createdAt } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }`;

export const RESERVATION = `query ($id: ID!) { reservation(id: $id) { ${RESERVATION_FIELDS} } }`;

export const INCREASE = `
  mutation ($input: IncreaseReservationInput!) {
    increaseReservation(input: $input) { ${ERROR_FIELDS} ... on ReservationStateError { status } ... on InsufficientCreditsError { required available } ... on IncreaseReservationSuccess { reservation { ${RESERVATION_FIELDS} } balance { ${BALANCE_FIELDS} } } }
  }`;
