// Throw-away certificates for the TLS suites, minted by Debian's `openssl` inside the test: a CA
// of its own (so clients really verify, with that CA as their only trust anchor) and server
// certificates it signs for 127.0.0.1, ::1 and localhost. Nothing is written outside the
// temporary directory, which the caller removes.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Makes a CA in a fresh temporary directory. Returns { dir, caFile, caPem, issue(name), cleanup() }
 * where issue(name) writes <name>.pem / <name>.key (a leaf for 127.0.0.1, ::1 and localhost,
 * signed by the CA) and returns { certFile, keyFile, pem, fingerprint256 }.
 */
export function makeCa(prefix = 'pulsec-tls-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=pulsec throw-away test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  fs.writeFileSync(path.join(dir, 'leaf.ext'),
    'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' +
    'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n');
  let serial = 1;
  const ca = {
    dir,
    caFile: path.join(dir, 'ca.pem'),
    caPem: fs.readFileSync(path.join(dir, 'ca.pem'), 'utf8'),
    issue(name, { curve = 'prime256v1', rsa = false } = {}) {
      const key = `${name}.key`;
      const keyArgs = rsa ? ['-newkey', 'rsa:2048'] : ['-newkey', 'ec', '-pkeyopt', `ec_paramgen_curve:${curve}`];
      openssl(['req', ...keyArgs, '-nodes', '-keyout', key, '-out', `${name}.csr`, '-subj', `/CN=${name}`], dir);
      openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-set_serial', String(++serial),
        '-days', '2', '-out', `${name}.pem`, '-extfile', 'leaf.ext'], dir);
      const pem = fs.readFileSync(path.join(dir, `${name}.pem`), 'utf8');
      return {
        certFile: path.join(dir, `${name}.pem`),
        keyFile: path.join(dir, key),
        pem,
        fingerprint256: new crypto.X509Certificate(pem).fingerprint256,
        spki: crypto.createHash('sha256')
          .update(new crypto.X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' }))
          .digest('base64'),
      };
    },
    cleanup() {
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return ca;
}
