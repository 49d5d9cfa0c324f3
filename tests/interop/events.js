// The real BullMQ following am2z jobs, for tests/test_events.c. One command per run; every
// result is one JSON line on stdout ("ready" once listening). Errors go to stderr, exit 1.
//
//   node events.js listen PORT PREFIX QUEUE...
//       A QueueEvents per queue, listening to added, waiting, active, progress, completed,
//       failed, retries-exhausted, delayed, drained, stalled and removed; prints
//       {"queue", "event", "args", "id"} per event until killed (or 60 s).
//   node events.js worker PORT PREFIX QUEUE
//       A Worker with removeOnComplete and removeOnFail true: returns {"by":"bullmq","sum"}
//       (the sum of the numeric fields of the input state), or throws "node says no" when
//       the input has "fail"; runs until killed (or 60 s).
//   node events.js workers PORT PREFIX QUEUE
//       Prints Queue.getWorkers() (the client name of each worker).
'use strict';
const { Queue, Worker, QueueEvents } = require('bullmq');
const IORedis = require('ioredis');

function die(msg) {
    process.stderr.write(`events.js: ${msg}\n`);
    process.exit(1);
}
function out(obj) {
    process.stdout.write((typeof obj === 'string' ? obj : JSON.stringify(obj)) + '\n');
}
function deadline(ms, what) {
    const t = setTimeout(() => die(`${what}: still running after ${ms} ms`), ms);
    t.unref();
}
function conn(port) {
    return { host: '127.0.0.1', port: Number(port), maxRetriesPerRequest: null };
}
const EVENTS = ['added', 'waiting', 'active', 'progress', 'completed', 'failed', 'retries-exhausted',
                'delayed', 'drained', 'stalled', 'removed'];

async function listen([port, prefix, ...queues]) {
    deadline(60000, 'listen');
    const connection = conn(port);
    const redis = new IORedis(connection);
    for (const queue of queues) {
        // Start after the stream's current last entry: QueueEvents' own '$' is taken when its
        // first XREAD reaches Redis, which may be after "ready" (events would be missed).
        const last = await redis.xrevrange(`${prefix}:${queue}:events`, '+', '-', 'COUNT', 1);
        const qe = new QueueEvents(queue, { connection, prefix, lastEventId: last.length ? last[0][0] : '0-0' });
        for (const event of EVENTS) {
            if (event === 'drained') qe.on(event, id => out({ queue, event, id }));
            else qe.on(event, (args, id) => out({ queue, event, args, id }));
        }
        qe.on('error', e => die(`QueueEvents ${queue}: ${e && e.message}`));
        await qe.waitUntilReady();
    }
    await redis.quit();
    out('ready');
    await new Promise(() => {});
}

async function worker([port, prefix, queue]) {
    deadline(60000, 'worker');
    const w = new Worker(queue, async job => {
        const input = job.data && job.data.am2z ? job.data.state : job.data;
        if (input && input.fail) throw new Error('node says no');
        let sum = 0;
        for (const v of Object.values(input || {})) if (typeof v === 'number') sum += v;
        return { by: 'bullmq', sum };
    }, { connection: conn(port), prefix, removeOnComplete: { count: 0 }, removeOnFail: { count: 0 } });
    w.on('error', e => die(`worker: ${e && e.message}`));
    await w.waitUntilReady();
    out('ready');
    await new Promise(() => {});
}

async function workers([port, prefix, queue]) {
    deadline(10000, 'workers');
    const q = new Queue(queue, { connection: conn(port), prefix });
    const list = await q.getWorkers();
    out(list.map(c => c.rawname)); // name is the queue name; rawname the client name
    await q.close();
}

const commands = { listen, worker, workers };
const [cmd, ...args] = process.argv.slice(2);
if (!commands[cmd]) die(`unknown command ${cmd}; see the comment at the top`);
commands[cmd](args).then(() => process.exit(0), e => die(e && e.stack || String(e)));
