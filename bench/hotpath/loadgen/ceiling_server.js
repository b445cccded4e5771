'use strict';
// A broadcast server in Node with `ws`, speaking the same minimal frames as
// bench/hotpath/baseline_server.py, used only to find the load generator's own
// ceiling: it does less work per delivery than the generator does to receive one,
// so the rate the generator reaches against it is the most the generator can count.
//
//   node ceiling_server.js PORT

const WebSocket = require('ws');

const port = Number(process.argv[2]);
const rooms = new Map(); // room -> Set of sockets
const seqs = new Map();
let nextUser = 1;
let nextMessage = 1;

const wss = new WebSocket.Server({ host: '127.0.0.1', port, perMessageDeflate: false, backlog: 4096 });

wss.on('connection', (ws) => {
  const uid = nextUser++;
  const user = { id: uid, name: `user${uid}`, role: 'user' };
  const joined = new Set();
  ws.send(JSON.stringify({ type: 'hello', user, limits: {} }));
  ws.on('message', (data) => {
    let f;
    try {
      f = JSON.parse(data.toString());
    } catch (e) {
      ws.send(JSON.stringify({ type: 'error', code: 'bad_frame', detail: 'not JSON' }));
      return;
    }
    if (f.type === 'send') {
      if (!joined.has(f.room)) {
        ws.send(JSON.stringify({ type: 'error', code: 'not_joined', detail: 'join first', ref: f.ref }));
        return;
      }
      const seq = (seqs.get(f.room) || 0) + 1;
      seqs.set(f.room, seq);
      const id = nextMessage++;
      const ts = new Date().toISOString();
      ws.send(JSON.stringify({ type: 'ack', ref: f.ref, room: f.room, id, seq, ts }));
      const payload = Buffer.from(
        JSON.stringify({ type: 'message', room: f.room, id, seq, user, body: f.body, ts })
      );
      for (const member of rooms.get(f.room)) {
        if (member.readyState === WebSocket.OPEN) member.send(payload, { binary: false });
      }
    } else if (f.type === 'join') {
      if (!rooms.has(f.room)) rooms.set(f.room, new Set());
      rooms.get(f.room).add(ws);
      joined.add(f.room);
      const reply = { type: 'joined', room: f.room, presence: [], last_seq: seqs.get(f.room) || 0, replay_truncated: false };
      if (f.ref !== undefined) reply.ref = f.ref;
      ws.send(JSON.stringify(reply));
    } else if (f.type === 'ping') {
      ws.send(JSON.stringify({ type: 'pong', ts: new Date().toISOString(), ref: f.ref }));
    }
  });
  ws.on('close', () => {
    for (const room of joined) rooms.get(room).delete(ws);
  });
  ws.on('error', () => {});
});

wss.on('listening', () => {
  process.stdout.write(`listening on ${port}\n`);
});
