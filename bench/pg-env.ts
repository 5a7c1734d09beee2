// Imported first by bench/run.ts, before anything loads test/helpers/databases.ts,
// which reads TEST_DATABASE_URL once when it is evaluated: BENCH_DATABASE_URL,
// when set, is the PostgreSQL server the benchmarks run against.
if (process.env.BENCH_DATABASE_URL) process.env.TEST_DATABASE_URL = process.env.BENCH_DATABASE_URL;

export {};
