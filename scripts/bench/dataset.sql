-- pgstrata benchmark data set (run after `pgbench -i -s SCALE` or before; independent tables).
-- usage: psql -X -v ON_ERROR_STOP=1 -v rows=N -f dataset.sql
--
-- A mixed, realistic data set that compresses a few times over (unlike pgbench's blank
-- filler columns):
--   events  N rows, append-mostly, bigserial primary key plus two secondary indexes;
--   docs    N/4 jsonb documents (some values long enough to be TOASTed).
-- With N = 2,000,000 and pgbench scale 20 this is about 0.9 GB under base/.
\set ON_ERROR_STOP on

CREATE TABLE IF NOT EXISTS events (
    id       bigserial PRIMARY KEY,
    ts       timestamptz NOT NULL,
    user_id  int NOT NULL,
    kind     text NOT NULL,
    payload  text NOT NULL,
    amount   numeric(12,2) NOT NULL
) WITH (autovacuum_enabled = false);

INSERT INTO events (ts, user_id, kind, payload, amount)
SELECT now() - make_interval(secs => g),
       (random() * 100000)::int,
       (ARRAY['click', 'view', 'buy', 'login', 'logout'])[1 + g % 5],
       md5(g::text) || ' ' || md5((g * 7)::text) || ' ' || repeat(chr(97 + g % 26), g % 40),
       round((random() * 1000)::numeric, 2)
FROM generate_series(1, :rows) AS g;

CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_user ON events (user_id);

CREATE TABLE IF NOT EXISTS docs (
    id   serial PRIMARY KEY,
    doc  jsonb NOT NULL
) WITH (autovacuum_enabled = false);

INSERT INTO docs (doc)
SELECT jsonb_build_object(
           'id', g,
           'name', 'user' || g,
           'tags', jsonb_build_array(md5(g::text), g % 17),
           'score', random(),
           'bio', repeat(md5((g * 3)::text), 1 + g % 4))
FROM generate_series(1, :rows / 4) AS g;

-- Keep the "hour of change" deterministic. Autovacuum is off for these two tables (see
-- WITH above) and they are not vacuumed: a vacuum would fill the free space map with the
-- few hundred spare bytes every loaded page has, and the workload's appended events would
-- then land in thousands of old pages instead of the table's end, depending on whether
-- autovacuum happened to run before the workload (that alone nearly doubles the pages
-- changed). ANALYZE gives planner statistics and sets hint bits now, before any backup.
ANALYZE events;
ANALYZE docs;
CHECKPOINT;
