# Sourced by the many-files, month and s3-catalog profiles: a cluster of
# many one-row tables, and changes to some of them. The caller defines
# sql SQL (psql -At against the cluster).

# Create tables t0..t(N-1), each of one row with a primary key (about 6 files
# a table after VACUUM), then VACUUM and CHECKPOINT.
make_tables() {  # n
  local n=$1 lo hi
  for ((lo = 0; lo < n; lo += 500)); do
    hi=$((lo + 499 < n - 1 ? lo + 499 : n - 1))
    sql "DO \$\$ BEGIN FOR i IN $lo..$hi LOOP
           EXECUTE format('CREATE TABLE t%s (id int PRIMARY KEY, v text); INSERT INTO t%s VALUES (1, %L)', i, i, md5(i::text));
         END LOOP; END \$\$" >/dev/null
  done
  sql "VACUUM" >/dev/null
  sql "CHECKPOINT" >/dev/null
}

# Update the row of COUNT tables picked at random among t0..t(N-1).
change_tables() {  # n count
  sql "DO \$\$ DECLARE k int; BEGIN FOR k IN SELECT (random() * ($1 - 1))::int FROM generate_series(1, greatest(1, $2)) LOOP
         EXECUTE format('UPDATE t%s SET v = md5(random()::text) WHERE id = 1', k);
       END LOOP; END \$\$" >/dev/null
}
