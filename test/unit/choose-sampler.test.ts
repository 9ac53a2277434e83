/** OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG as the OpenTelemetry environment specification names them, under telemetry.sampling. */
import { describe, expect, it } from 'vitest';
import { chooseSampler } from '../../src/observability/tracing.js';

function choose(env: Record<string, string>, sampling?: number): { choice: ReturnType<typeof chooseSampler>; problems: string[] } {
  const problems: string[] = [];
  const choice = chooseSampler(sampling === undefined ? {} : { sampling }, env, (message) => problems.push(message));
  return { choice, problems };
}

describe('chooseSampler', () => {
  it.each([
    [{}, { parentBased: true, ratio: 1 }],
    [{ OTEL_TRACES_SAMPLER_ARG: '0.25' }, { parentBased: true, ratio: 0.25 }],
    [{ OTEL_TRACES_SAMPLER: 'always_on' }, { parentBased: false, ratio: 1 }],
    [{ OTEL_TRACES_SAMPLER: ' ALWAYS_OFF ' }, { parentBased: false, ratio: 0 }],
    [{ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '0.5' }, { parentBased: false, ratio: 0.5 }],
    [{ OTEL_TRACES_SAMPLER: 'traceidratio' }, { parentBased: false, ratio: 1 }],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_always_on' }, { parentBased: true, ratio: 1 }],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_always_off' }, { parentBased: true, ratio: 0 }],
    [{ OTEL_TRACES_SAMPLER: 'parentbased_traceidratio', OTEL_TRACES_SAMPLER_ARG: '0' }, { parentBased: true, ratio: 0 }],
  ])('%j -> %j', (env, expected) => {
    const { choice, problems } = choose(env);
    expect(choice).toEqual(expected);
    expect(problems).toEqual([]);
  });

  it('telemetry.sampling wins over the environment (parent-based)', () => {
    expect(choose({ OTEL_TRACES_SAMPLER: 'always_off', OTEL_TRACES_SAMPLER_ARG: '0' }, 0.3)).toEqual({ choice: { parentBased: true, ratio: 0.3 }, problems: [] });
  });

  it.each([['abc'], ['1.5'], ['-0.1'], ['NaN'], ['Infinity']])('OTEL_TRACES_SAMPLER_ARG=%s is reported and 1.0 taken', (arg) => {
    const { choice, problems } = choose({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: arg });
    expect(choice).toEqual({ parentBased: false, ratio: 1 });
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain('OTEL_TRACES_SAMPLER_ARG is not a ratio from 0 to 1');
    expect(problems[0]).not.toContain(arg);
  });

  it.each([['jaeger_remote'], ['xray'], ['alwayson']])('OTEL_TRACES_SAMPLER=%s is reported and parentbased_always_on taken, its ARG left alone', (name) => {
    const arg = 'endpoint=http://user:canary-pw@jaeger:14250,pollingIntervalMs=5000';
    const { choice, problems } = choose({ OTEL_TRACES_SAMPLER: name, OTEL_TRACES_SAMPLER_ARG: arg });
    expect(choice).toEqual({ parentBased: true, ratio: 1 });
    expect(problems.join('\n')).not.toContain('canary-pw');
    expect(problems).toEqual([expect.stringContaining(`OTEL_TRACES_SAMPLER="${name}" is not one Airlock implements`)]);
  });
});
