#!/usr/bin/env node
// Compile chain/contracts/*.sol with the pinned solcjs and write deterministic artifacts to
// chain/artifacts/<Name>.json, and copy the Safe's own audited build from its npm package beside them.
// Usage: node chain/contracts/build.js   (wired to `make contracts`).
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const CONTRACTS_DIR = __dirname;
// ARTIFACTS_DIR lets the test suite rebuild into a scratch folder and compare the bytes.
const ARTIFACTS_DIR = process.env.ARTIFACTS_DIR || path.resolve(CONTRACTS_DIR, '..', 'artifacts');
const REPO_ROOT = path.resolve(CONTRACTS_DIR, '..', '..');
const DEPLOYABLE = ['P2PEscrow', 'ArbitratorPool', 'TestToken', 'PauseGuardianModule', 'SanctionsOracle'];
// The Safe is deployed from the package's build, never recompiled here: its bytecode is the audited release's.
const SAFE_PACKAGE = '@safe-global/safe-contracts';
const SAFE_VERSION = '1.4.1';
const SAFE_ARTIFACTS = {
  Safe: 'Safe.sol/Safe.json',
  SafeProxyFactory: 'proxies/SafeProxyFactory.sol/SafeProxyFactory.json',
};
const EVM_VERSION = 'cancun';

function fail(message) {
  process.stderr.write(message.endsWith('\n') ? message : message + '\n');
  process.exit(1);
}

// Sources are keyed by bare file name ("P2PEscrow.sol") so that nothing machine-specific
// (absolute paths) ends up in the compiler input or output.
function collectSources() {
  const files = fs
    .readdirSync(CONTRACTS_DIR)
    .filter((f) => f.endsWith('.sol'))
    .sort();
  if (files.length === 0) fail(`no .sol files found in ${CONTRACTS_DIR}`);
  const sources = {};
  for (const f of files) {
    sources[f] = { content: fs.readFileSync(path.join(CONTRACTS_DIR, f), 'utf8') };
  }
  return sources;
}

// Resolves "@openzeppelin/..." (or any package) imports from node_modules.
function findImports(importPath) {
  const candidates = [];
  if (!importPath.startsWith('.') && !path.isAbsolute(importPath)) {
    candidates.push(path.join(REPO_ROOT, 'node_modules', importPath));
    try {
      candidates.push(require.resolve(importPath, { paths: [REPO_ROOT, CONTRACTS_DIR] }));
    } catch (_) {
      /* fall through */
    }
  }
  candidates.push(path.join(CONTRACTS_DIR, importPath));
  for (const candidate of candidates) {
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) {
      return { contents: fs.readFileSync(candidate, 'utf8') };
    }
  }
  return { error: `File not found: ${importPath} (run \`npm install\`?)` };
}

function writeArtifact(name, artifact) {
  const target = path.join(ARTIFACTS_DIR, `${name}.json`);
  fs.writeFileSync(target, JSON.stringify(artifact, null, 2) + '\n');
  process.stdout.write(`wrote ${path.relative(REPO_ROOT, target)}\n`);
}

// Our artifact shape, with `source` naming the release instead of a solc version.
function copySafeArtifacts() {
  const root = path.join(REPO_ROOT, 'node_modules', SAFE_PACKAGE);
  const pkg = path.join(root, 'package.json');
  if (!fs.existsSync(pkg)) fail(`${SAFE_PACKAGE} is not installed: run \`npm ci\``);
  const version = JSON.parse(fs.readFileSync(pkg, 'utf8')).version;
  // A different release would silently change the committed bytecode: refuse rather than copy it.
  if (version !== SAFE_VERSION) fail(`${SAFE_PACKAGE} is ${version}, expected ${SAFE_VERSION}: run \`npm ci\``);
  for (const [name, file] of Object.entries(SAFE_ARTIFACTS)) {
    const built = JSON.parse(fs.readFileSync(path.join(root, 'build', 'artifacts', 'contracts', file), 'utf8'));
    if (built.contractName !== name || !built.bytecode || built.bytecode === '0x') {
      fail(`${SAFE_PACKAGE}/${file} is not the ${name} build artifact`);
    }
    writeArtifact(name, {
      contractName: name,
      abi: built.abi,
      bytecode: built.bytecode,
      deployedBytecode: built.deployedBytecode,
      source: `${SAFE_PACKAGE} ${SAFE_VERSION} (npm build artifact)`,
    });
  }
}

function main() {
  const input = {
    language: 'Solidity',
    sources: collectSources(),
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: EVM_VERSION,
      metadata: { bytecodeHash: 'none' },
      outputSelection: {
        '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] },
      },
    },
  };

  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  const diagnostics = output.errors || [];
  const errors = diagnostics.filter((e) => e.severity === 'error');
  for (const d of diagnostics.filter((e) => e.severity !== 'error')) {
    process.stderr.write(d.formattedMessage || d.message);
  }
  if (errors.length > 0) {
    fail(
      `solc ${solc.version()} failed with ${errors.length} error(s):\n` +
        errors.map((e) => e.formattedMessage || e.message).join('\n'),
    );
  }

  const found = {};
  for (const file of Object.keys(output.contracts || {})) {
    for (const [name, contract] of Object.entries(output.contracts[file])) {
      if (DEPLOYABLE.includes(name)) {
        if (found[name]) fail(`contract ${name} is defined in more than one source file`);
        found[name] = contract;
      }
    }
  }

  fs.mkdirSync(ARTIFACTS_DIR, { recursive: true });
  for (const name of DEPLOYABLE) {
    const contract = found[name];
    if (!contract) fail(`contract ${name} not found in compiler output`);
    const bytecode = contract.evm.bytecode.object;
    if (!bytecode) fail(`contract ${name} has empty bytecode (abstract?)`);
    writeArtifact(name, {
      contractName: name,
      abi: contract.abi,
      bytecode: '0x' + bytecode,
      deployedBytecode: '0x' + contract.evm.deployedBytecode.object,
      solcVersion: solc.version(),
    });
  }
  copySafeArtifacts();
}

main();
