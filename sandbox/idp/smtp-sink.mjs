// A minimal SMTP sink for the sandbox: Dovecot's submission service relays here, and every
// message is written to SINK_DIR as <n>.eml, so tests can check a message really arrived.
// Loopback only, no authentication (it is the relay's trusted next hop), bounded sizes.
//
// Environment: SINK_PORT, SINK_DIR.

import { createServer } from 'node:net';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const port = Number(process.env.SINK_PORT);
const dir = process.env.SINK_DIR;
mkdirSync(dir, { recursive: true });
let count = 0;
const MAX = 10 * 1024 * 1024;

createServer((sock) => {
  let buf = '';
  let inData = false;
  let data = [];
  let envelope = { from: '', to: [] };
  const say = (l) => sock.write(`${l}\r\n`);
  say('220 sink.sandbox.test ESMTP sink');
  sock.on('data', (chunk) => {
    buf += chunk.toString('latin1');
    if (buf.length > MAX) { sock.destroy(); return; }
    let i;
    while ((i = buf.indexOf('\r\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (inData) {
        if (line === '.') {
          inData = false;
          count += 1;
          const head = `X-Sink-From: ${envelope.from}\r\nX-Sink-To: ${envelope.to.join(', ')}\r\n`;
          writeFileSync(join(dir, `${Date.now()}-${count}.eml`), head + data.join('\r\n') + '\r\n', 'latin1');
          data = [];
          envelope = { from: '', to: [] };
          say(`250 2.0.0 Ok: queued as SINK${count}`);
        } else {
          data.push(line.startsWith('..') ? line.slice(1) : line);
        }
        continue;
      }
      const cmd = line.slice(0, 4).toUpperCase();
      if (cmd === 'EHLO') { say('250-sink.sandbox.test'); say('250-8BITMIME'); say('250 PIPELINING'); }
      else if (cmd === 'HELO') say('250 sink.sandbox.test');
      else if (cmd === 'MAIL') { envelope.from = line.slice(10).trim(); say('250 2.1.0 Ok'); }
      else if (cmd === 'RCPT') { envelope.to.push(line.slice(8).trim()); say('250 2.1.5 Ok'); }
      else if (cmd === 'DATA') { inData = true; say('354 End data with <CR><LF>.<CR><LF>'); }
      else if (cmd === 'RSET') { envelope = { from: '', to: [] }; say('250 2.0.0 Ok'); }
      else if (cmd === 'NOOP') say('250 2.0.0 Ok');
      else if (cmd === 'QUIT') { say('221 2.0.0 Bye'); sock.end(); }
      else say('502 5.5.2 Command not recognized');
    }
  });
  sock.on('error', () => {});
}).listen(port, '127.0.0.1', () => console.log(`sandbox SMTP sink on 127.0.0.1:${port}, writing to ${dir}`));
