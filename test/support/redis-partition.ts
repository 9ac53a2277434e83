/**
 * Cutting one replica off from Redis and bringing it back, through the TCP relay it reaches Redis by
 * (tcp-relay.ts), waiting each time until the replica's readiness says it noticed.
 */
import { eventually } from '../helpers/operator.js';
import { sendRequest } from '../helpers/send-request.js';
import type { ProxyFixture } from '../helpers/start-proxy.js';
import type { TcpRelay } from './tcp-relay.js';

/** What the replica's /_airlock/ready says of shared state: "redis reachable", "redis unreachable", ... */
export async function stateCheck(proxy: ProxyFixture): Promise<string> {
  const response = await sendRequest(`${proxy.url}/_airlock/ready`);
  return response.json<{ checks: Record<string, string> }>().checks['state'] ?? '';
}

export async function cutOff(relay: TcpRelay, proxy: ProxyFixture): Promise<void> {
  relay.partition();
  await eventually('the replica noticing it is cut off', async () => (await stateCheck(proxy)) === 'redis unreachable', 3_000);
}

/** Heals the relay; "redis reachable" comes only once the reconnection's reload (with its flush) succeeded. */
export async function reconnect(relay: TcpRelay, proxy: ProxyFixture): Promise<void> {
  relay.heal();
  await eventually('the replica reconnected and reloaded', async () => (await stateCheck(proxy)) === 'redis reachable', 10_000, 50);
}
