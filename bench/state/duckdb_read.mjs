// Reads a state directory's Parquet files with DuckDB, independently of the
// Go code, and prints {"kv": [...], "events": [...]} as JSON. The queries are
// the ones docs/STATE.md documents. Usage: node duckdb_read.mjs STATE_DIR
import { DuckDBInstance } from '@duckdb/node-api';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node duckdb_read.mjs STATE_DIR');
  process.exit(2);
}
const files = `${dir.replace(/'/g, "''")}/data/*.parquet`;

// The current value of every key: the newest seq wins, a tombstone hides.
const current = `
SELECT key, base64(value) AS value, CAST(seq AS VARCHAR) AS seq, service
FROM (
  SELECT *, row_number() OVER (PARTITION BY key ORDER BY seq DESC) AS rn
  FROM read_parquet('${files}')
  WHERE op IN ('put', 'delete')
)
WHERE rn = 1 AND op = 'put'
ORDER BY key`;

// The event log, each event once (a compaction may leave a copy on disk
// until garbage collection).
const events = `
SELECT DISTINCT CAST(seq AS VARCHAR) AS seq, base64(value) AS value, service, seq AS s
FROM read_parquet('${files}')
WHERE op = 'event'
ORDER BY s`;

const instance = await DuckDBInstance.create(':memory:');
const conn = await instance.connect();
const rows = async (sql) => (await conn.runAndReadAll(sql)).getRowObjectsJson();
const out = { kv: [], events: [] };
const any = await rows(`SELECT count(*) AS n FROM glob('${files}')`);
if (Number(any[0].n) > 0) {
  out.kv = await rows(current);
  out.events = (await rows(events)).map(({ seq, value, service }) => ({ seq, value, service }));
}
process.stdout.write(JSON.stringify(out));
