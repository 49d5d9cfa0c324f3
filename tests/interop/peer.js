// The real BullMQ as a peer of am2z in tests/test_interop.c. One command per run; every
// result is one JSON line on stdout, so the C side reads it with fgets. Progress lines
// ("ready") tell the C side when the peer is listening. Errors go to stderr with exit 1.
//
//   node peer.js add-and-wait PORT QUEUE NAME DATA_JSON [PREFIX] [TTL_MS]
//       Queue.add(NAME, DATA) with QueueEvents listening first; prints "ready" once the
//       job is added, then {"id", "returnvalue"} or {"id", "failedReason"} when it finishes.
//   node peer.js worker PORT QUEUE COUNT [PREFIX]
//       A Worker that processes COUNT jobs by returning {"by":"bullmq","name":job.name,
//       "input":<input>,"sum":<sum of the numeric fields of input>}, where input is
//       job.data, or the "state" inside it for a job am2z enqueued;
//       then closes; prints "ready" when running and one {"id","name","data","opts"} line
//       per job.
//   node peer.js counts PORT PREFIX QUEUE...
//       Prints {"<queue>": getJobCounts(), ...}.
//   node peer.js job PORT QUEUE ID [PREFIX]
//       Prints the job as BullMQ reads it (getJob + getState), or null.
//   node peer.js add PORT QUEUE PREFIX NAME DATA_JSON OPTS_JSON [NAME DATA_JSON OPTS_JSON]...
//       Queue.add(NAME, DATA, OPTS) for each triple, in order; prints {"ids": [...]}.
//   node peer.js pause|resume PORT QUEUE [PREFIX]
//       Queue.pause() / Queue.resume(); prints {"paused": isPaused()}.
'use strict';
const { Queue, Worker, QueueEvents } = require('bullmq');
const IORedis = require('ioredis');

function die(msg) {
    process.stderr.write(`peer.js: ${msg}\n`);
    process.exit(1);
}
function out(obj) {
    process.stdout.write((typeof obj === 'string' ? obj : JSON.stringify(obj)) + '\n');
}
// A test must never hang on a peer: every command has a hard deadline.
function deadline(ms, what) {
    const t = setTimeout(() => die(`${what}: no answer within ${ms} ms`), ms);
    t.unref();
}
function conn(port) {
    return { host: '127.0.0.1', port: Number(port), maxRetriesPerRequest: null };
}

async function addAndWait([port, queue, name, dataJson, prefix = 'bull', ttl = '10000']) {
    deadline(Number(ttl) + 5000, 'add-and-wait');
    const connection = conn(port);
    const q = new Queue(queue, { connection, prefix });
    // QueueEvents starts reading at '$' only when its first XREAD reaches Redis, which can
    // be after waitUntilReady() resolved: an am2z worker finishing within a few ms then
    // beats it, the event is missed and waitUntilFinished hangs (seen here). Starting from
    // the stream's current last entry closes that window.
    const redis = new IORedis(connection);
    const last = await redis.xrevrange(`${prefix}:${queue}:events`, '+', '-', 'COUNT', 1);
    await redis.quit();
    const qe = new QueueEvents(queue, { connection, prefix, lastEventId: last.length ? last[0][0] : '0-0' });
    await qe.waitUntilReady();
    await q.waitUntilReady();
    const job = await q.add(name, JSON.parse(dataJson));
    out('ready');
    try {
        const rv = await job.waitUntilFinished(qe, Number(ttl));
        out({ id: job.id, returnvalue: rv });
    } catch (e) {
        out({ id: job.id, failedReason: String(e && e.message) });
    }
    await qe.close();
    await q.close();
}

async function worker([port, queue, count, prefix = 'bull']) {
    const want = Number(count);
    deadline(20000, 'worker');
    const connection = conn(port);
    let seen = 0;
    let finish;
    const done = new Promise(r => { finish = r; });
    const w = new Worker(queue, async job => {
        // An am2z job carries its input state in an envelope: {"am2z":1, ..., "state":{...}}.
        const input = job.data && job.data.am2z ? job.data.state : job.data;
        let sum = 0;
        for (const v of Object.values(input || {})) if (typeof v === 'number') sum += v;
        out({ id: job.id, name: job.name, data: job.data, opts: job.opts });
        return { by: 'bullmq', name: job.name, input, sum };
    }, { connection, prefix, autorun: false });
    w.on('completed', () => { if (++seen >= want) finish(); });
    w.on('failed', (job, err) => die(`job ${job && job.id} failed in the node worker: ${err}`));
    w.run();
    await w.waitUntilReady();
    out('ready');
    await done;
    await w.close();
}

async function counts([port, prefix, ...queues]) {
    deadline(10000, 'counts');
    const res = {};
    for (const name of queues) {
        const q = new Queue(name, { connection: conn(port), prefix });
        res[name] = await q.getJobCounts();
        await q.close();
    }
    out(res);
}

async function job([port, queue, id, prefix = 'bull']) {
    deadline(10000, 'job');
    const q = new Queue(queue, { connection: conn(port), prefix });
    const j = await q.getJob(id);
    if (!j) {
        out(null);
    } else {
        out({
            id: j.id, name: j.name, data: j.data, opts: j.opts, state: await j.getState(),
            returnvalue: j.returnvalue, failedReason: j.failedReason || null,
            attemptsMade: j.attemptsMade, attemptsStarted: j.attemptsStarted,
            processedOn: j.processedOn || null, finishedOn: j.finishedOn || null,
        });
    }
    await q.close();
}

async function add([port, queue, prefix, ...rest]) {
    deadline(10000, 'add');
    const q = new Queue(queue, { connection: conn(port), prefix });
    const ids = [];
    for (let i = 0; i + 2 < rest.length; i += 3) {
        const j = await q.add(rest[i], JSON.parse(rest[i + 1]), JSON.parse(rest[i + 2]));
        ids.push(j.id);
    }
    out({ ids });
    await q.close();
}

async function pauseResume(which, [port, queue, prefix = 'bull']) {
    deadline(10000, which);
    const q = new Queue(queue, { connection: conn(port), prefix });
    await (which === 'pause' ? q.pause() : q.resume());
    out({ paused: await q.isPaused() });
    await q.close();
}

const commands = {
    'add-and-wait': addAndWait, add, worker, counts, job,
    pause: args => pauseResume('pause', args), resume: args => pauseResume('resume', args),
};
const [cmd, ...args] = process.argv.slice(2);
if (!commands[cmd]) die(`unknown command ${cmd}; see the comment at the top`);
commands[cmd](args).then(() => process.exit(0), e => die(e && e.stack || String(e)));
