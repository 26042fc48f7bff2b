import { SignJWT, errors as joseErrors, jwtVerify } from 'jose';

export const ROLES = ['member', 'service', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** Who is calling, as proven by a verified token. */
export interface Viewer {
  subject: string;
  role: Role;
  /** The organization a member or service acts for; null for an admin, who may act for any. */
  organizationId: string | null;
  /** Seconds since the epoch at which the token stops being valid, if it says. */
  expiresAt: number | null;
}

export class AuthenticationError extends Error {
  override name = 'AuthenticationError';
}

export function secretKey(secret: string): Uint8Array {
  return new TextEncoder().encode(secret);
}

/** Verifies an `Authorization` header value (`Bearer <JWT>`, HS256) and returns its viewer. */
export async function verifyAuthorization(header: string | null | undefined, key: Uint8Array): Promise<Viewer> {
  if (!header) throw new AuthenticationError('Missing Authorization header.');
  const match = /^Bearer\s+(\S+)$/i.exec(header.trim());
  if (!match) throw new AuthenticationError('The Authorization header must be "Bearer <token>".');
  let payload;
  try {
    ({ payload } = await jwtVerify(match[1]!, key, { algorithms: ['HS256'] }));
  } catch (error) {
    if (error instanceof joseErrors.JWTExpired) throw new AuthenticationError('The token has expired.');
    throw new AuthenticationError('The token is not valid.');
  }
  const role = payload.role;
  if (typeof payload.sub !== 'string' || payload.sub.length === 0) throw new AuthenticationError('The token has no subject.');
  if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) {
    throw new AuthenticationError('The token has no valid role.');
  }
  const org = payload.org;
  if (role !== 'admin' && (typeof org !== 'string' || org.length === 0)) {
    throw new AuthenticationError('A member or service token must name its organization.');
  }
  return {
    subject: payload.sub,
    role: role as Role,
    organizationId: role === 'admin' ? null : (org as string).toLowerCase(),
    expiresAt: typeof payload.exp === 'number' ? payload.exp : null,
  };
}

export interface TokenClaims {
  subject: string;
  role: Role;
  organizationId?: string | null;
  /** A jose duration such as '1h' or '30d'. */
  expiresIn?: string;
}

export function signToken(claims: TokenClaims, key: Uint8Array): Promise<string> {
  const jwt = new SignJWT(claims.organizationId ? { role: claims.role, org: claims.organizationId } : { role: claims.role })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(claims.subject)
    .setIssuedAt();
  if (claims.expiresIn) jwt.setExpirationTime(claims.expiresIn);
  return jwt.sign(key);
}
