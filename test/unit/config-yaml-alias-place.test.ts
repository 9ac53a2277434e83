/**
 * YAML problems found only when the document is converted (an alias whose anchor is not set before it,
 * a merge key given something other than a mapping) were reported at "(top level)" with no line (found
 * by review): in a long file, the operator had to search for every `*` and `<<`. They carry the line of
 * the alias or merge key now.
 */
import { describe, expect, it } from 'vitest';
import { formatProblem } from '../../src/config/config-problem.js';
import { parseConfigText } from '../../src/config/load-config.js';

const shown = (text: string): string[] => parseConfigText(text, '/tmp/airlock.yaml').problems.map((p) => formatProblem(p, 'airlock.yaml'));

describe('YAML conversion problems are placed', () => {
  it('an alias with no anchor before it', () => {
    expect(shown('listen: 127.0.0.1:0\nservices:\n  a: *defaults\n')).toEqual(['airlock.yaml:3:6: error at (top level): YAML: Unresolved alias (the anchor must be set before the alias): defaults']);
  });

  it('a merge key given a scalar', () => {
    expect(shown('listen: 127.0.0.1:0\nservices:\n  a:\n    <<: 5\n')).toEqual(['airlock.yaml:4:5: error at (top level): YAML: Merge sources must be maps or map aliases']);
  });
});
