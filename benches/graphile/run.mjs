// graphile-worker 0.18 throughput on the server benches/store.rs uses: queue N no-op jobs
// in one addJobs call, then time a runner with `concurrency` concurrent jobs and graphile's
// batching on (local queue, batched completions) until every job has succeeded.
// Usage: node run.mjs POSTGRES_URL JOBS CONCURRENCY  -> prints "jobs/s <rate>"
import { Logger, makeWorkerUtils, run } from "graphile-worker";

const quiet = new Logger(() => () => {});

const [url, jobsArg, concurrencyArg] = process.argv.slice(2);
const jobs = Number(jobsArg);
const concurrency = Number(concurrencyArg);
const preset = {
  worker: {
    connectionString: url,
    concurrentJobs: concurrency,
    maxPoolSize: concurrency + 2,
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
    pollInterval: 1000,
  },
};

const utils = await makeWorkerUtils({ connectionString: url, logger: quiet });
await utils.migrate();
const specs = [];
for (let i = 0; i < jobs; i++) specs.push({ identifier: "noop", payload: { i } });
for (let i = 0; i < specs.length; i += 10000) await utils.addJobs(specs.slice(i, i + 10000));
await utils.release();

let done = 0;
let finish;
const allDone = new Promise((resolve) => (finish = resolve));
const started = process.hrtime.bigint();
const runner = await run({
  preset,
  noHandleSignals: true,
  logger: quiet,
  taskList: {
    noop: async () => {
      done += 1;
      if (done === jobs) finish();
    },
  },
});
const timeout = setTimeout(() => finish(), 600_000);
await allDone;
clearTimeout(timeout);
await runner.stop(); // flushes the batched completions: counted in the time
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
if (done < jobs) {
  console.error(`only ${done} of ${jobs} jobs ran`);
  process.exit(1);
}
console.log(`jobs/s ${(jobs / seconds).toFixed(0)}`);
