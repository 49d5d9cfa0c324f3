// The BullMQ side of `make bench-vs-bullmq`: the same measurements bench/queue.c makes for
// am2z, with BullMQ's Queue / Worker / QueueEvents against the same redis-server in the
// same run. bench/queue.c starts this script and reads the one JSON line it prints last.
//
//   node bench.js PORT [N_RT] [N_TPUT] [N_SESSIONS]
//   node bench.js worker PORT QUEUE CONCURRENCY     (a worker process; started by the above)
//
// Measurements (all against 127.0.0.1:PORT, which is FLUSHALLed between phases):
//   rt       one caller with one Worker (concurrency 1) in the same process: Queue.add of a
//            no-op job, then job.waitUntilFinished(queueEvents); N_RT sequential round trips
//            after a warm-up, p50 and p99 in ms.
//   rt2      the same with the Worker in another process.
//   tput_cC  two worker processes with concurrency C (1, 4 and 64); the caller adds N_TPUT
//            no-op jobs (addBulk in chunks of 500) and waits until all are in `completed`;
//            jobs/s from the first add to the last completion.
//   cpu_cC_us  Redis's CPU time per job (INFO cpu) in each throughput run, in us.
//   rss_c64  the larger peak RSS (VmHWM) of the two concurrency-64 workers, in MB.
//   session  a session's queue created, used and dropped: new Queue, Worker and QueueEvents
//            on a fresh queue name, one no-op job through it, then close them all and
//            queue.obliterate(); mean ms over N_SESSIONS.
'use strict';
const { Queue, Worker, QueueEvents } = require('bullmq');
const IORedis = require('ioredis');
const { spawn } = require('child_process');
const fs = require('fs');
const readline = require('readline');

const conn = port => ({ host: '127.0.0.1', port: Number(port), maxRetriesPerRequest: null });
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
function die(msg) {
    process.stderr.write(`bullmq bench: ${msg}\n`);
    process.exit(1);
}

async function workerMain([port, queue, concurrency]) {
    const w = new Worker(queue, async () => null,
                         { connection: conn(port), concurrency: Number(concurrency) });
    w.on('error', e => die(`worker: ${e}`));
    await w.waitUntilReady();
    process.stdout.write('ready\n');
    // The parent ends the run by closing our stdin (or killing us).
    process.stdin.resume();
    process.stdin.on('end', async () => { await w.close(); process.exit(0); });
}

function peakRssMb(pid) {
    try {
        const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
        return m ? Number(m[1]) / 1024 : -1;
    } catch (e) {
        return -1;
    }
}

function startWorker(port, queue, concurrency) {
    return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [__filename, 'worker', port, queue, String(concurrency)],
                            { stdio: ['pipe', 'pipe', 'inherit'] });
        const rl = readline.createInterface({ input: child.stdout });
        rl.once('line', line => line === 'ready' ? resolve(child) : reject(new Error(line)));
        child.once('exit', code => reject(new Error(`worker exited with ${code}`)));
    });
}

function stopWorker(child) {
    return new Promise(resolve => {
        child.removeAllListeners('exit');
        child.once('exit', resolve);
        child.stdin.end();
    });
}

function percentile(sorted, p) {
    return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

// Sequential add + waitUntilFinished; the worker is in this process (inProcess) or in a
// child process.
async function roundTrip(port, n, inProcess) {
    const connection = conn(port);
    const queue = inProcess ? 'rt' : 'rt2';
    const q = new Queue(queue, { connection });
    const qe = new QueueEvents(queue, { connection });
    const w = inProcess ? new Worker(queue, async () => null, { connection, concurrency: 1 })
                        : await startWorker(port, queue, 1);
    await Promise.all([q.waitUntilReady(), qe.waitUntilReady(), inProcess && w.waitUntilReady()]);
    const times = [];
    const warm = Math.min(200, n);
    for (let i = 0; i < n + warm; i++) {
        const t0 = nowMs();
        const job = await q.add('noop', {});
        await job.waitUntilFinished(qe, 10000);
        if (i >= warm) times.push(nowMs() - t0);
    }
    await (inProcess ? w.close() : stopWorker(w));
    await qe.close();
    await q.close();
    times.sort((a, b) => a - b);
    return { p50: percentile(times, 0.5), p99: percentile(times, 0.99) };
}

// Redis's CPU seconds so far (INFO cpu, user + sys): what the jobs cost the server.
async function redisCpu(redis) {
    const info = await redis.info('cpu');
    const field = name => Number((info.match(new RegExp(`${name}:([0-9.]+)`)) || [0, 0])[1]);
    return field('used_cpu_user') + field('used_cpu_sys');
}

// Completion is read from the `completed` set (ZCARD every 2 ms), not from QueueEvents: at
// these rates a QueueEvents reader falls more than the stream's ~10k-entry trim behind and
// misses completions (seen here), so counting events would hang. This spares BullMQ the
// per-result work the am2z caller does, which only flatters the baseline.
async function throughput(port, n, concurrency) {
    const queue = `tput${concurrency}`;
    const workers = [await startWorker(port, queue, concurrency), await startWorker(port, queue, concurrency)];
    const connection = conn(port);
    const q = new Queue(queue, { connection });
    const redis = new IORedis(connection);
    await q.waitUntilReady();
    const cpu0 = await redisCpu(redis);
    const t0 = nowMs();
    for (let i = 0; i < n; i += 500) {
        const batch = [];
        for (let k = i; k < Math.min(n, i + 500); k++) batch.push({ name: 'noop', data: {} });
        await q.addBulk(batch);
    }
    for (;;) {
        const done = await redis.zcard(`bull:${queue}:completed`);
        if (done >= n) break;
        if (nowMs() - t0 > 300000) die(`throughput: only ${done} of ${n} jobs completed in 300 s`);
        await new Promise(r => setTimeout(r, 2));
    }
    const seconds = (nowMs() - t0) / 1000;
    const cpuUsPerJob = (await redisCpu(redis) - cpu0) * 1e6 / n;
    const rss = Math.max(...workers.map(w => peakRssMb(w.pid)));
    await Promise.all(workers.map(stopWorker));
    await redis.quit();
    await q.close();
    return { jobsPerSec: n / seconds, rssMb: rss, cpuUsPerJob };
}

// A session's queue: created, one no-op job through it, closed and deleted.
async function sessions(port, n) {
    const connection = conn(port);
    let total = 0;
    for (let i = 0; i < n; i++) {
        const name = `session-${i}`;
        const t0 = nowMs();
        const q = new Queue(name, { connection });
        // A fresh queue: read its events from the start, or a job finishing before the
        // first XREAD reaches Redis would be missed (QueueEvents starts at '$').
        const qe = new QueueEvents(name, { connection, lastEventId: '0-0' });
        const w = new Worker(name, async () => null, { connection });
        await Promise.all([q.waitUntilReady(), qe.waitUntilReady(), w.waitUntilReady()]);
        const job = await q.add('noop', {});
        await job.waitUntilFinished(qe, 10000);
        await w.close();
        await qe.close();
        await q.obliterate({ force: true });
        await q.close();
        total += nowMs() - t0;
    }
    return total / n;
}

async function main([port, nRt = '2000', nTput = '20000', nSessions = '200']) {
    if (!port) die('usage: node bench.js PORT [N_RT] [N_TPUT] [N_SESSIONS]');
    setTimeout(() => die('no result within 10 minutes'), 600000).unref();
    const redis = new IORedis(conn(port));
    const flush = () => redis.flushall();
    const res = {};
    await flush();
    const rt = await roundTrip(port, Number(nRt), true);
    res.rt_p50_ms = rt.p50;
    res.rt_p99_ms = rt.p99;
    await flush();
    const rt2 = await roundTrip(port, Number(nRt), false);
    res.rt2_p50_ms = rt2.p50;
    res.rt2_p99_ms = rt2.p99;
    await flush();
    const c1 = await throughput(port, Number(nTput), 1);
    res.tput_c1 = c1.jobsPerSec;
    res.cpu_c1_us = c1.cpuUsPerJob;
    await flush();
    const c4 = await throughput(port, Number(nTput), 4);
    res.tput_c4 = c4.jobsPerSec;
    res.cpu_c4_us = c4.cpuUsPerJob;
    await flush();
    const c64 = await throughput(port, Number(nTput), 64);
    res.tput_c64 = c64.jobsPerSec;
    res.cpu_c64_us = c64.cpuUsPerJob;
    res.rss_c64_mb = c64.rssMb;
    await flush();
    res.session_ms = await sessions(port, Number(nSessions));
    await flush();
    await redis.quit();
    res.bullmq = require('bullmq/package.json').version;
    process.stdout.write(JSON.stringify(res) + '\n');
}

const argv = process.argv.slice(2);
(argv[0] === 'worker' ? workerMain(argv.slice(1)) : main(argv))
    .catch(e => die(e && e.stack || String(e)));
