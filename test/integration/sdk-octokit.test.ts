/**
 * The official @octokit/rest client, with its agent token as `auth` (sent as `Authorization: token
 * <t>`) and its baseUrl on Airlock's /github prefix, reads and creates issues on a stand-in GitHub API.
 * The upstream sees `Authorization: Bearer <real token>` (bearer injection) and never the agent token;
 * a route that is not configured becomes an octokit RequestError with status 403.
 */
import { Octokit } from '@octokit/rest';
import { RequestError } from '@octokit/request-error';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const quietLog = { debug() {}, info() {}, warn() {}, error() {} };

function issue(owner: string, repo: string, number: number, title: string, body: string | null): Record<string, unknown> {
  return {
    id: 1000 + number,
    node_id: `I_${number}`,
    url: `https://api.github.com/repos/${owner}/${repo}/issues/${number}`,
    html_url: `https://github.com/${owner}/${repo}/issues/${number}`,
    number,
    state: 'open',
    title,
    body,
    user: { login: 'octocat', id: 1, type: 'User' },
    labels: [],
    comments: 0,
    created_at: '2026-01-01T00:00:00Z',
    updated_at: '2026-01-01T00:00:00Z',
  };
}

describe('@octokit/rest through Airlock', () => {
  const realToken = canary('github');
  const agent = generateAgentToken();
  const agentVisible: string[] = [];
  let upstream: Upstream;
  let proxy: ProxyFixture;

  function octokit(): Octokit {
    return new Octokit({ auth: agent.token, baseUrl: `${proxy.url}/github`, log: quietLog, request: { retries: 0 } });
  }

  beforeAll(async () => {
    upstream = await startUpstream((req, res, recorded) => {
      const json = (status: number, payload: unknown): void => {
        const text = JSON.stringify(payload);
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'x-github-request-id': 'ABCD:1234' });
        res.end(text);
      };
      const path = (req.url ?? '').split('?')[0] ?? '';
      const get = /^\/repos\/([^/]+)\/([^/]+)\/issues\/(\d+)$/.exec(path);
      if (req.method === 'GET' && get) {
        json(200, issue(get[1] as string, get[2] as string, Number(get[3]), 'Printer on fire', 'It is still on fire.'));
        return;
      }
      const create = /^\/repos\/([^/]+)\/([^/]+)\/issues$/.exec(path);
      if (req.method === 'POST' && create) {
        const sent = JSON.parse(recorded.body.toString('utf8')) as { title: string; body?: string };
        json(201, issue(create[1] as string, create[2] as string, 43, sent.title, sent.body ?? null));
        return;
      }
      const contents = /^\/repos\/acme\/widgets\/contents\/(.+)$/.exec(path);
      if (req.method === 'GET' && contents) {
        // GitHub reads the file's path with %2F as "/" (the one segment octokit sends).
        const file = decodeURIComponent(contents[1] as string);
        json(200, { type: 'file', name: file.split('/').at(-1), path: file, encoding: 'base64', content: Buffer.from(`# ${file}\n`).toString('base64') });
        return;
      }
      // Issues listed three to a page, seven in all; GitHub's next links name the repository by id.
      const list = /^\/(?:repos\/acme\/widgets|repositories\/7)\/issues$/.exec(path);
      if (req.method === 'GET' && list) {
        const page = Number(new URL(req.url ?? '', 'http://x').searchParams.get('page') ?? '1');
        const own = (n: number): string => `<${upstream.url}/repositories/7/issues?state=open&page=${n}>`;
        const links = [...(page < 3 ? [`${own(page + 1)}; rel="next"`] : []), `${own(3)}; rel="last"`, '<https://docs.github.com/rest/issues>; rel="help"; title="see <docs>, page 1"'];
        res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', link: links.join(', ') });
        res.end(JSON.stringify([1, 2, 3].map((i) => (page - 1) * 3 + i).filter((n) => n <= 7).map((n) => issue('acme', 'widgets', n, `Issue ${n}`, null))));
        return;
      }
      json(404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
    });
    proxy = await startProxy(
      {
        services: {
          github: {
            upstream: upstream.url,
            credential: { secret: 'env:GITHUB_TOKEN', inject: 'bearer' },
            routes: [
              { method: 'GET', path: '/repos/:owner/:repo/issues/:number', scope: 'issues:read' },
              { method: 'POST', path: '/repos/:owner/:repo/issues', scope: 'issues:write' },
              { method: 'GET', path: '/repos/:owner/:repo/issues', scope: 'issues:read' },
              { method: 'GET', path: '/repositories/:id/issues', scope: 'issues:read' },
              { method: 'GET', path: '/repos/:owner/:repo/contents/*', scope: 'contents:read' },
            ],
          },
        },
        agents: { 'support-bot': { tokens: [agent.hash], credentials: [{ service: 'github', max_scope: ['issues:read', 'issues:write', 'contents:read'] }] } },
      },
      { env: { GITHUB_TOKEN: realToken } },
    );
  });

  afterAll(async () => {
    await proxy.close();
    await upstream.close();
  });

  it('gets an issue with the real token injected as Bearer and the agent token removed', async () => {
    const { status, data } = await octokit().rest.issues.get({ owner: 'acme', repo: 'widgets', issue_number: 42 });
    agentVisible.push(JSON.stringify(data));
    expect(status).toBe(200);
    expect(data.number).toBe(42);
    expect(data.title).toBe('Printer on fire');

    const seen = upstream.requests.at(-1);
    expect(seen?.method).toBe('GET');
    expect(seen?.target).toBe('/repos/acme/widgets/issues/42');
    expect(seen?.header('authorization')).toEqual([`Bearer ${realToken}`]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(agent.token);
    // Octokit's own headers pass through.
    expect(seen?.header('accept')).toEqual(['application/vnd.github.v3+json']);
    expect(seen?.header('user-agent')[0]).toContain('octokit');
  });

  it('creates an issue: the JSON body arrives as sent and the created issue comes back', async () => {
    const { status, data } = await octokit().rest.issues.create({ owner: 'acme', repo: 'widgets', title: 'Add dark mode', body: 'Please.' });
    agentVisible.push(JSON.stringify(data));
    expect(status).toBe(201);
    expect(data.number).toBe(43);
    expect(data.title).toBe('Add dark mode');

    const seen = upstream.requests.at(-1);
    expect(seen?.method).toBe('POST');
    expect(seen?.target).toBe('/repos/acme/widgets/issues');
    expect(JSON.parse(seen?.body.toString('utf8') ?? '')).toEqual({ title: 'Add dark mode', body: 'Please.' });
    expect(seen?.header('authorization')).toEqual([`Bearer ${realToken}`]);
    expect(seen?.rawHeaders.join('\n')).not.toContain(agent.token);
    expect(seen?.body.toString('utf8')).not.toContain(agent.token);
  });

  // Found by an SDK walkthrough: octokit sends a nested file path as one segment with %2F, which Airlock
  // refused (400) whatever the route; under a route ending in "*" both readings of it select that route.
  it('reads a file in a subdirectory: the encoded slash octokit sends reaches GitHub as sent', async () => {
    const { status, data } = await octokit().rest.repos.getContent({ owner: 'acme', repo: 'widgets', path: 'docs/guide/README.md' });
    agentVisible.push(JSON.stringify(data));
    expect(status).toBe(200);
    expect(data).toMatchObject({ type: 'file', path: 'docs/guide/README.md' });
    const seen = upstream.requests.at(-1);
    expect(seen?.target).toBe('/repos/acme/widgets/contents/docs%2Fguide%2FREADME.md');
    expect(seen?.header('authorization')).toEqual([`Bearer ${realToken}`]);
  });

  // Found by an SDK walkthrough: octokit.paginate followed GitHub's rel="next" to the upstream directly,
  // with the agent's token. Links into the upstream now point back through Airlock, absolute (octokit
  // puts its base URL before a relative one); others stay as they came.
  it('paginates: every page through Airlock, its links pointing back at the service', async () => {
    const before = upstream.requests.length;
    const issues = await octokit().paginate(octokit().rest.issues.listForRepo, { owner: 'acme', repo: 'widgets', state: 'open' });
    agentVisible.push(JSON.stringify(issues));
    expect(issues.map((i) => i.number)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const pages = upstream.requests.slice(before);
    expect(pages.map((r) => r.target)).toEqual(['/repos/acme/widgets/issues?state=open', '/repositories/7/issues?state=open&page=2', '/repositories/7/issues?state=open&page=3']);
    for (const page of pages) expect(page.header('authorization')).toEqual([`Bearer ${realToken}`]);

    const first = await octokit().request('GET /repos/{owner}/{repo}/issues', { owner: 'acme', repo: 'widgets', state: 'open' });
    agentVisible.push(JSON.stringify(first.headers));
    expect(first.headers.link).toBe(
      `<${proxy.url}/github/repositories/7/issues?state=open&page=2>; rel="next", <${proxy.url}/github/repositories/7/issues?state=open&page=3>; rel="last", <https://docs.github.com/rest/issues>; rel="help"; title="see <docs>, page 1"`,
    );
  });

  /** The refusal body as the agent can read it, whichever way octokit decoded it (text or bytes). */
  function bodyText(data: unknown): string {
    if (typeof data === 'string') return data;
    if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8');
    return JSON.stringify(data);
  }

  async function callUnconfiguredRoute(): Promise<RequestError> {
    const error = await octokit().rest.repos.get({ owner: 'acme', repo: 'widgets' }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RequestError);
    const refused = error as RequestError;
    agentVisible.push(refused.message, bodyText(refused.response?.data));
    return refused;
  }

  it('refuses a route that is not configured with a RequestError of status 403', async () => {
    const before = upstream.requests.length;
    const refused = await callUnconfiguredRoute();
    expect(refused.status).toBe(403);
    expect(refused.response?.headers['x-airlock-request-id']).toMatch(/^[0-9a-f-]{36}$/);
    // The id under the header octokit logs ("with id ..."), and the body as JSON octokit parses: it asks
    // for application/vnd.github.v3+json, which problem+json does not satisfy (found by the SDK
    // walkthrough: response.data was the body as a string).
    expect(refused.response?.headers['x-github-request-id']).toBe(refused.response?.headers['x-airlock-request-id']);
    expect(refused.response?.headers['content-type']).toBe('application/json; charset=utf-8');
    expect(typeof refused.response?.data).toBe('object');
    const problem = refused.response?.data as { code: string; status: number; detail: string };
    expect(problem).toMatchObject({ code: 'route_not_allowed', status: 403 });
    expect(problem.detail).toContain('GET /repos/acme/widgets matches no route of service github');
    expect(upstream.requests.length, 'a refused call never reaches the upstream').toBe(before);
  });

  // @octokit/request decodes only application/json (and scim+json) as JSON, and makes a JSON body's
  // `message` its error's message: Airlock's detail (what to do), not the whole document.
  it("makes Airlock's detail the RequestError message", async () => {
    const refused = await callUnconfiguredRoute();
    expect(refused.message).toBe((refused.response?.data as { detail: string }).detail);
    expect(refused.message).toMatch(/^GET \/repos\/acme\/widgets matches no route of service github/);
  });

  it('leaves no trace of the token in what the agent saw, the logs or the audit', async () => {
    await proxy.waitForAudit(9);
    assertNoLeak([realToken], [
      { name: 'SDK-visible responses', text: agentVisible.join('\n') },
      { name: 'log', text: proxy.logLines.join('') },
      { name: 'audit', text: proxy.auditText() },
    ]);
    const records = proxy.auditRecords();
    expect(records.map((r) => [r.decision, r.status, r.code, r.route])).toEqual([
      ['allow', 200, null, '/repos/:owner/:repo/issues/:number'],
      ['allow', 201, null, '/repos/:owner/:repo/issues'],
      ['allow', 200, null, '/repos/:owner/:repo/contents/*'],
      ['allow', 200, null, '/repos/:owner/:repo/issues'],
      ['allow', 200, null, '/repositories/:id/issues'],
      ['allow', 200, null, '/repositories/:id/issues'],
      ['allow', 200, null, '/repos/:owner/:repo/issues'],
      ['deny', 403, 'route_not_allowed', null],
      ['deny', 403, 'route_not_allowed', null],
    ]);
  });
});
