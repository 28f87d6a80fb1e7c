// Bundles the extension (dist/extension.js); with --tests, the unit and
// protocol tests (out/test/**/*.test.js) for `node --test`; with --e2e, the
// end-to-end test (out/test/e2e/*.e2e.js, run by scripts/e2e-vscode.sh).
import { build } from 'esbuild';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

const common = {
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  sourcemap: true,
  logLevel: 'warning',
};

const production = process.argv.includes('--production');
await build({
  ...common,
  entryPoints: ['src/extension.ts'],
  outfile: 'dist/extension.js',
  external: ['vscode'],
  minify: production,
  sourcemap: !production, // the .vsix ships no map
});

if (process.argv.includes('--tests')) {
  const entryPoints = ['unit', 'protocol'].flatMap((dir) =>
    readdirSync(join('test', dir))
      .filter((name) => name.endsWith('.test.ts'))
      .map((name) => join('test', dir, name)),
  );
  // No `vscode` here: the tests import only the pure modules.
  await build({ ...common, entryPoints, outdir: 'out/test', outbase: 'test' });
}

if (process.argv.includes('--e2e')) {
  await build({
    ...common,
    entryPoints: ['test/e2e/vscode.e2e.ts'],
    outdir: 'out/test',
    outbase: 'test',
    external: ['playwright-core'],
  });
}
