-- pgstrata benchmark: one "hour" of change, as a pgbench custom script.
-- usage: pgbench -n -f workload.sql -t TXNS -c 2 -j 2 -D scale=SCALE
-- Each transaction updates one random pgbench account (spread over the whole table,
-- so it dirties pages everywhere, as real OLTP updates do) and appends one event
-- (which touches the tail of events and the pages of its three indexes).
-- With scale 20 and 2 x 10,000 transactions about a fifth of the pages change.
\set aid random(1, 100000 * :scale)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
INSERT INTO events (ts, user_id, kind, payload, amount)
    VALUES (now(), :aid % 100000, 'buy', md5(:aid::text), 1.00);
