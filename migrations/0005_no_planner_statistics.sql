-- Query plans follow the schema's indexes, not gathered statistics. Statistics gathered
-- while the tables were nearly empty (the server used to run PRAGMA optimize when it
-- stopped, and a new database is nearly empty then) told SQLite that contexts held a row
-- or two, so once it had grown it scanned the whole table for each row of a join: the
-- Test viewer's poll over recent deliveries read every cached context a hundred times.
DROP TABLE IF EXISTS sqlite_stat1;
DROP TABLE IF EXISTS sqlite_stat4;
