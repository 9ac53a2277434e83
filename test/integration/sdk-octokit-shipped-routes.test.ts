/**
 * The shipped config/airlock.yaml's GitHub routes with the real @octokit/rest: octokit.paginate follows
 * GitHub's next links, which name the repository by id (/repositories/1296269/issues?page=2), and
 * git.getRef sends a ref's slashes as %2F (heads%2Frelease%2Fv1.2). Found by the SDK walkthrough:
 * page 2 was 403 route_not_allowed, and git.getRef had no route.
 */
import { readFileSync } from 'node:fs';
import { Octokit } from '@octokit/rest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { generateAgentToken } from '../../src/identity/agent-token.js';
import { assertNoLeak } from '../helpers/assert-no-leak.js';
import { canary } from '../helpers/canary.js';
import { startProxy, type ProxyFixture } from '../helpers/start-proxy.js';
import { startUpstream, type Upstream } from '../helpers/start-upstream.js';

const shipped = parse(readFileSync(new URL('../../config/airlock.yaml', import.meta.url), 'utf8')) as { services: { github: { routes: unknown[] } } };
const realToken = canary('github-shipped');
const agent = generateAgentToken();
const seenByAgent: string[] = [];
let upstream: Upstream;
let proxy: ProxyFixture;

const quietLog = { debug() {}, info() {}, warn() {}, error() {} };
const octokit = (): Octokit => new Octokit({ auth: agent.token, baseUrl: `${proxy.url}/github`, log: quietLog, request: { retries: 0 } });

beforeAll(async () => {
  upstream = await startUpstream((req, res) => {
    const url = new URL(req.url ?? '', 'http://x');
    const json = (payload: unknown, headers: Record<string, string> = {}): void => {
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', ...headers });
      res.end(JSON.stringify(payload));
    };
    if (/^\/(?:repos\/octocat\/hello-world|repositories\/1296269)\/(issues|commits|pulls)$/.test(url.pathname)) {
      const page = Number(url.searchParams.get('page') ?? '1');
      const kind = url.pathname.split('/').at(-1) as string;
      const next: Record<string, string> = page < 3 ? { link: `<${upstream.url}/repositories/1296269/${kind}?per_page=2&page=${page + 1}>; rel="next"` } : {};
      json([1, 2].map((i) => ({ number: (page - 1) * 2 + i, sha: `s${(page - 1) * 2 + i}` })), next);
      return;
    }
    const ref = /^\/repos\/octocat\/hello-world\/git\/ref\/(.+)$/.exec(url.pathname);
    if (ref !== null) {
      json({ ref: `refs/${decodeURIComponent(ref[1] as string)}`, object: { sha: 'abc', type: 'commit' } });
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"Not Found"}');
  });
  proxy = await startProxy(
    {
      services: { github: { upstream: upstream.url, credential: { secret: 'env:GITHUB_TOKEN', inject: 'bearer' }, routes: shipped.services.github.routes } },
      agents: { coder: { tokens: [agent.hash], credentials: [{ service: 'github', max_scope: ['issues:read', 'repos:read', 'pulls:read', 'git:read'] }] } },
    },
    { env: { GITHUB_TOKEN: realToken } },
  );
});

afterAll(async () => {
  assertNoLeak([realToken, agent.token], [
    { name: 'SDK-visible responses', text: seenByAgent.join('\n') },
    { name: 'log', text: proxy.logLines.join('') },
    { name: 'audit', text: proxy.auditText() },
  ]);
  await proxy.close();
  await upstream.close();
});

describe("the shipped config's GitHub routes under @octokit/rest", () => {
  it.each([
    ['issues', (o: Octokit) => o.paginate(o.rest.issues.listForRepo, { owner: 'octocat', repo: 'hello-world', per_page: 2 })],
    ['commits', (o: Octokit) => o.paginate(o.rest.repos.listCommits, { owner: 'octocat', repo: 'hello-world', per_page: 2 })],
    ['pulls', (o: Octokit) => o.paginate(o.rest.pulls.list, { owner: 'octocat', repo: 'hello-world', per_page: 2 })],
  ] as const)('octokit.paginate lists every page of %s, following the /repositories/:id links', async (kind, list) => {
    const before = upstream.requests.length;
    const all = (await list(octokit())) as Array<{ number: number }>;
    seenByAgent.push(JSON.stringify(all));
    expect(all.map((item) => item.number)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(upstream.requests.slice(before).map((r) => r.target)).toEqual([
      `/repos/octocat/hello-world/${kind}?per_page=2`,
      `/repositories/1296269/${kind}?per_page=2&page=2`,
      `/repositories/1296269/${kind}?per_page=2&page=3`,
    ]);
    for (const request of upstream.requests.slice(before)) expect(request.header('authorization')).toEqual([`Bearer ${realToken}`]);
  });

  it('git.getRef reaches GitHub with the ref as octokit encodes it', async () => {
    const { data } = await octokit().rest.git.getRef({ owner: 'octocat', repo: 'hello-world', ref: 'heads/release/v1.2' });
    seenByAgent.push(JSON.stringify(data));
    expect(data.ref).toBe('refs/heads/release/v1.2');
    expect(upstream.requests.at(-1)?.target).toBe('/repos/octocat/hello-world/git/ref/heads%2Frelease%2Fv1.2');
  });
});
