/**
 * Architecture: only injectors reveal secrets (DESIGN.md style rule 7), and the redactor, which must know a
 * value to scrub it. Every other module handles Credential objects that cannot print themselves. This test
 * reads src/**\/*.ts and fails when `.reveal(` - or any other reference to `reveal`, such as
 * `c['reveal']()`, `const { reveal } = c` or `c?.reveal` - appears anywhere else.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const REPO = fileURLToPath(new URL('../..', import.meta.url));
const SRC = join(REPO, 'src');
// Injectors put the value on the wire, the redactor scans for it, the credential broker hands store
// logins (Vault role ids, OAuth2 client secrets) their own credentials, and shared OAuth2 tokens are
// sealed (AES-GCM) for the other replicas: nowhere else.
const ALLOWED_DIRS = ['src/injection/', 'src/redaction/'];
const ALLOWED_FILES = ['src/credentials/credential-broker.ts', 'src/credentials/shared-token-source.ts'];
/** Where reveal is defined: its declaration is not a call. */
const DEFINITION = 'src/credentials/credential.ts';

function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.isFile() && entry.name.endsWith('.ts')) out.push(path);
  }
  return out;
}

function repoPath(file: string): string {
  return relative(REPO, file).split(sep).join('/');
}

interface Use {
  file: string;
  line: number;
  text: string;
}

/** Every reference to a property named `reveal` in code (comments and strings are not code). */
function revealReferences(file: string, text: string): Use[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true, ts.ScriptKind.TS);
  const uses: Use[] = [];
  const note = (node: ts.Node): void => {
    const { line } = source.getLineAndCharacterOfPosition(node.getStart(source));
    uses.push({ file, line: line + 1, text: node.getText(source).slice(0, 80) });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isPropertyAccessExpression(node) && node.name.text === 'reveal') note(node);
    else if (ts.isElementAccessExpression(node) && ts.isStringLiteralLike(node.argumentExpression) && node.argumentExpression.text === 'reveal') note(node);
    else if (ts.isBindingElement(node) && ((node.propertyName !== undefined && ts.isIdentifier(node.propertyName) && node.propertyName.text === 'reveal') || (node.propertyName === undefined && ts.isIdentifier(node.name) && node.name.text === 'reveal'))) note(node);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return uses;
}

function allowed(file: string): boolean {
  return ALLOWED_DIRS.some((dir) => file.startsWith(dir)) || ALLOWED_FILES.includes(file);
}

describe('who may reveal a secret', () => {
  const files = sourceFiles(SRC).map((path) => ({ file: repoPath(path), text: readFileSync(path, 'utf8') }));

  it('scans the whole source tree', () => {
    expect(files.length).toBeGreaterThan(30);
    expect(files.map((f) => f.file)).toContain(DEFINITION);
  });

  it('`.reveal(` is called only in src/injection/, src/redaction/, the credential broker and the shared token store', () => {
    const callers = files.filter((f) => /\.\s*reveal\s*\(/.test(f.text));
    expect(callers.length, 'the scan should find the injectors that do reveal').toBeGreaterThan(0);
    expect(callers.some((f) => f.file.startsWith('src/injection/'))).toBe(true);
    expect(callers.map((f) => f.file).filter((file) => !allowed(file))).toEqual([]);
  });

  it('no other reference to reveal (element access, destructuring, optional chaining, aliasing) exists outside them', () => {
    const outside = files.filter((f) => !allowed(f.file)).flatMap((f) => revealReferences(f.file, f.text));
    expect(outside).toEqual([]);
    // The definition is a method declaration, not a reference: it must still be there to be found above.
    expect(files.find((f) => f.file === DEFINITION)?.text).toMatch(/^\s*reveal\(\): string \{/m);
  });

  it('the reference finder catches the spellings it is meant to catch, and ignores comments and strings', () => {
    const sample = [
      'a.reveal();',
      "b['reveal']();",
      'c?.reveal();',
      'const { reveal } = d;',
      'const { reveal: r } = e;',
      'const f = g.reveal.bind(g);',
      '// h.reveal() in a comment',
      "const s = 'i.reveal()';",
      'const revealed = 1;',
    ].join('\n');
    expect(revealReferences('src/x.ts', sample).map((u) => u.line)).toEqual([1, 2, 3, 4, 5, 6]);
  });
});
