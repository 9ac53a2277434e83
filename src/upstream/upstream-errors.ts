/**
 * What went wrong talking to an upstream, as one of our codes. Details are fixed sentences: an
 * upstream's or a TLS library's own words never reach the agent (they go to the log as the cause).
 */
import { AirlockError } from '../errors.js';
import { EgressRefusedError } from './egress-guard.js';

const UNREACHABLE_CODES: Readonly<Record<string, string>> = {
  ECONNREFUSED: 'the connection was refused',
  ECONNRESET: 'the connection was reset',
  EPIPE: 'the connection was closed while sending',
  ENOTFOUND: 'its host name does not resolve',
  EAI_AGAIN: 'DNS lookup failed temporarily',
  EHOSTUNREACH: 'its host is unreachable',
  ENETUNREACH: 'its network is unreachable',
  UND_ERR_SOCKET: 'the connection closed unexpectedly',
  UND_ERR_CLOSED: 'the connection pool is closed',
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: 'it sent a body that does not match its Content-Length',
  HPE_INVALID_CONSTANT: 'it sent a malformed HTTP response',
};

const TLS_VERIFY_CODES: ReadonlySet<string> = new Set(['DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY']);

function causeCode(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current !== null && typeof current === 'object'; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function egressRefusal(error: unknown): EgressRefusedError | null {
  let current: unknown = error;
  for (let depth = 0; depth < 4 && current !== null && typeof current === 'object'; depth++) {
    if (current instanceof EgressRefusedError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return null;
}

export function upstreamFailure(error: unknown, serviceName: string): AirlockError {
  if (error instanceof AirlockError) return error;
  if (egressRefusal(error) !== null) {
    return new AirlockError('upstream_unreachable', `The upstream of service ${serviceName} resolved to a non-public address and the service does not set allow_private; the request was not sent.`, { cause: error });
  }
  const code = causeCode(error);
  if (code === 'UND_ERR_CONNECT_TIMEOUT') return new AirlockError('upstream_timeout', `The upstream of service ${serviceName} did not accept a connection in time (timeouts.connect).`, { cause: error });
  if (code === 'UND_ERR_HEADERS_TIMEOUT') {
    // The request was sent: the SDKs' retry would send it again, and the provider may still be working
    // on (and billing) the first (found by the SDK walkthrough: one slow completion reached the upstream
    // three times). x-should-retry stops openai's and anthropic's; stripe-node retries with its
    // idempotency key, which is safe.
    return new AirlockError(
      'upstream_timeout',
      `The upstream of service ${serviceName} did not answer in time (timeouts.headers). The request was sent, so it may have taken effect there; an operator raises services.${serviceName}.timeouts.headers for long calls (the provider SDKs wait up to 600 s).`,
      { cause: error, headers: { 'x-should-retry': 'false' } },
    );
  }
  if (code === 'UND_ERR_BODY_TIMEOUT') return new AirlockError('upstream_timeout', `The upstream of service ${serviceName} stopped sending its response (timeouts.body).`, { cause: error });
  if (code !== undefined && (code.startsWith('ERR_TLS') || code.startsWith('CERT_') || TLS_VERIFY_CODES.has(code))) {
    return new AirlockError('upstream_unreachable', `The TLS certificate of the upstream of service ${serviceName} was not accepted; if it uses a private CA, set ca: on the service.`, { cause: error });
  }
  const reason = code === undefined ? undefined : UNREACHABLE_CODES[code];
  return new AirlockError('upstream_unreachable', `Could not get a response from the upstream of service ${serviceName}${reason === undefined ? '' : ` (${reason})`}. Airlock does not retry.`, { cause: error });
}
