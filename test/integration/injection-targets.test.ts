/**
 * An agent's copy of any place a credential of the service goes is removed, whichever credential the
 * request injects. Found by review: a grant with its own credential injected as bearer let the agent's
 * own ?api_key= (the service's credential's query key) and x-custom-key (another grant's header) reach
 * the upstream beside the injected credential. A real proxy in front of a recording upstream.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { sendRequest } from '../helpers/send-request.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const serviceKey = canary('targets-service');
const bearerKey = canary('targets-bearer');
const headerKey = canary('targets-header');
const agentOwn = canary('targets-agent-own');
const viaBearer = generateAgentToken();
const viaHeader = generateAgentToken();

let upstream: Upstream;
let proxy: ProxyFixture;

beforeAll(async () => {
  upstream = await startUpstream();
  const routes = [{ method: 'GET', path: '/v1/*', scope: 'api:read' }];
  proxy = await startProxy(
    {
      services: { api: { upstream: upstream.url, credential: { secret: 'env:SERVICE_KEY', inject: { query: 'api_key' } }, routes } },
      agents: {
        bearer: { tokens: [viaBearer.hash], credentials: [{ service: 'api', max_scope: ['*'], credential: { secret: 'env:BEARER_KEY', inject: 'bearer' } }] },
        header: { tokens: [viaHeader.hash], credentials: [{ service: 'api', max_scope: ['*'], credential: { secret: 'env:HEADER_KEY', inject: { header: 'X-Custom-Key', value: 'Token ${secret}' } } }] },
      },
    },
    { env: { SERVICE_KEY: serviceKey, BEARER_KEY: bearerKey, HEADER_KEY: headerKey } },
  );
});

afterAll(async () => {
  await proxy?.close();
  await upstream?.close();
});

describe("the service's other injection targets", () => {
  it("a grant injecting as bearer: the agent's ?api_key= and x-custom-key are removed", async () => {
    const response = await sendRequest(`${proxy.url}/api/v1/items?api_key=${agentOwn}&keep=1`, { headers: { authorization: `Bearer ${viaBearer.token}`, 'x-custom-key': agentOwn } });
    expect(response.status, response.text).toBe(200);
    const seen = upstream.requests.at(-1);
    expect(seen?.target).toBe('/v1/items?keep=1');
    expect(seen?.header('x-custom-key')).toEqual([]);
    expect(seen?.header('authorization')).toEqual([`Bearer ${bearerKey}`]);
  });

  it("a grant injecting a header: the agent's ?api_key= is removed, and its x-custom-key replaced", async () => {
    const response = await sendRequest(`${proxy.url}/api/v1/items?API_KEY=${agentOwn}`, { headers: { authorization: `Bearer ${viaHeader.token}`, 'x-custom-key': agentOwn } });
    expect(response.status, response.text).toBe(200);
    const seen = upstream.requests.at(-1);
    expect(seen?.target).toBe('/v1/items');
    expect(seen?.header('x-custom-key')).toEqual([`Token ${headerKey}`]);
  });

  it('leaves none of the agent-supplied value in what the upstream received', () => {
    const received = upstream.requests.map((r) => `${r.target}\n${r.rawHeaders.join('\n')}`).join('\n');
    assertNoLeak([agentOwn], [{ name: 'upstream requests', text: received }]);
  });
});
