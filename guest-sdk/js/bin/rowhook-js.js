#!/usr/bin/env node
// rowhook-js build: a JavaScript handler in, a rowhook handler component out.
//
// The handler module exports `onChange(change)`. The build bundles it with
// the SDK and whatever it imports (esbuild), wraps it in the `on-change`
// export of world `handler` (guest-sdk/wit/handler.wit), and makes the
// component with the chosen JavaScript engine:
//
// - quickjs (default): componentize-qjs, QuickJS-ng, the non-async runtime
//   (rowhook calls `on-change` synchronously; the async runtime needs the
//   component-model async ABI).
// - starlingmonkey: componentize-js, SpiderMonkey, without the fetch() and
//   fetch-event features (so the component does not import wasi:http);
//   installed apart, by `npm ci` in engines/starlingmonkey.

import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const SDK = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const WIT = resolve(SDK, '../wit/handler.wit');
const ENGINES = ['quickjs', 'starlingmonkey'];

const USAGE = `usage: rowhook-js build HANDLER.js -o OUT.wasm [--engine quickjs|starlingmonkey]

Builds a rowhook handler component from a JavaScript module that exports
onChange(change). The engine is quickjs unless --engine says otherwise.`;

function fail(message) {
  process.stderr.write(`rowhook-js: ${message}\n`);
  process.exit(1);
}

async function main(argv) {
  if (argv[0] !== 'build') fail(argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' ? USAGE : `unknown command \`${argv[0]}\`\n${USAGE}`);
  let parsed;
  try {
    parsed = parseArgs({
      args: argv.slice(1),
      allowPositionals: true,
      options: {
        out: { type: 'string', short: 'o' },
        engine: { type: 'string', default: 'quickjs' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    fail(`${e.message}\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (values.help) fail(USAGE);
  if (positionals.length !== 1) fail(`give one handler module, not ${positionals.length}\n${USAGE}`);
  if (!values.out) fail(`give the output file with -o OUT.wasm\n${USAGE}`);
  if (!ENGINES.includes(values.engine)) fail(`unknown engine \`${values.engine}\`: use quickjs or starlingmonkey`);
  const handler = resolve(positionals[0]);
  if (!existsSync(handler) || !statSync(handler).isFile()) fail(`handler module ${handler} does not exist`);
  const started = Date.now();
  const source = await bundle(handler, values.engine);
  const component = await componentize(source, handler, values.engine);
  writeFileSync(values.out, component);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  process.stderr.write(
    `rowhook-js: built ${values.out} (${values.engine}, ${(component.length / 1e6).toFixed(1)} MB) from ${relative(process.cwd(), handler) || handler} in ${secs} s\n`,
  );
}

/**
 * The handler, the SDK and everything they import, as one ES module whose
 * `onChange(bytes)` is the WIT export. `@rowhook/guest` always resolves to
 * this SDK, the one whose capability bindings fit this build.
 */
async function bundle(handler, engine) {
  const esbuild = await import('esbuild');
  const entry = [
    `import { installWit } from ${JSON.stringify(join(SDK, 'src/wit.js'))};`,
    `import { runHandler } from ${JSON.stringify(join(SDK, 'src/run.js'))};`,
    `import * as handler from ${JSON.stringify(handler)};`,
    `installWit(${JSON.stringify(engine)});`,
    `const handle = handler.onChange;`,
    `export function onChange(bytes) { runHandler(bytes, handle); }`,
  ].join('\n');
  let result;
  try {
    result = await esbuild.build({
      stdin: { contents: entry, resolveDir: dirname(handler), sourcefile: 'rowhook-entry.js', loader: 'js' },
      bundle: true,
      write: false,
      format: 'esm',
      platform: 'neutral',
      target: 'es2022',
      mainFields: ['module', 'main'],
      external: ['rowhook:*'],
      alias: { '@rowhook/guest': SDK },
      logLevel: 'silent',
    });
  } catch (e) {
    const errors = (e.errors ?? []).map((m) => `${m.location ? `${m.location.file}:${m.location.line}: ` : ''}${m.text}`);
    fail(`cannot bundle ${handler}:\n  ${errors.join('\n  ') || e.message}`);
  }
  if (!(await exportsOnChange(esbuild, handler))) {
    fail(`${handler} does not export onChange: add \`export function onChange(change) { ... }\``);
  }
  return result.outputFiles[0].text;
}

/** Whether the handler module itself exports onChange (the entry's import of it would only be undefined). */
async function exportsOnChange(esbuild, handler) {
  const r = await esbuild.build({
    entryPoints: [handler],
    bundle: false,
    write: false,
    format: 'esm',
    metafile: true,
    logLevel: 'silent',
  });
  const out = Object.values(r.metafile.outputs)[0];
  return out.exports.includes('onChange');
}

async function componentize(source, handler, engine) {
  const dir = mkdtempSync(join(tmpdir(), 'rowhook-js-'));
  try {
    const sourcePath = join(dir, 'handler.bundle.js');
    writeFileSync(sourcePath, source);
    if (engine === 'quickjs') {
      const { componentize } = await importEngine('componentize-qjs', 'quickjs');
      const { component } = await componentize({
        witPath: WIT,
        world: 'handler',
        jsSource: source,
        jsPath: sourcePath,
        moduleRoot: dir,
        sync: true,
      });
      return component;
    }
    // componentize-js 0.23.0 reads the WIT through the WASI shim of
    // @bytecodealliance/preview2-shim without depending on it; 0.25.0 is
    // the shim whose default preopen (the root) lets it read any path.
    const { componentize } = await importStarlingMonkey();
    const { component } = await componentize({
      sourcePath,
      witPath: WIT,
      worldName: 'handler',
      disableFeatures: ['http', 'fetch-event'],
    });
    return component;
  } catch (e) {
    fail(`${engine} could not make a component of ${handler}:\n${e.stack ?? e}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function importEngine(name, engine) {
  try {
    return await import(name);
  } catch (e) {
    if (e.code === 'ERR_MODULE_NOT_FOUND') {
      fail(`the ${engine} engine needs the npm package ${name}: run \`npm ci\` in ${SDK}`);
    }
    throw e;
  }
}

/**
 * componentize-js, from its own package in engines/starlingmonkey: it and
 * its dependencies take 400 MB, which a QuickJS build does not need.
 */
async function importStarlingMonkey() {
  const dir = join(SDK, 'engines/starlingmonkey');
  const pkg = join(dir, 'node_modules/@bytecodealliance/componentize-js/package.json');
  if (!existsSync(pkg)) {
    fail(`the starlingmonkey engine is installed apart: run \`npm ci\` in ${dir}`);
  }
  const entry = JSON.parse(readFileSync(pkg, 'utf8')).exports.import;
  return import(pathToFileURL(join(dirname(pkg), entry)).href);
}

await main(process.argv.slice(2));
