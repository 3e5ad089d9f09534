-- Which leader wrote each mirror row: the epoch of the leader transaction that last changed it.
--
-- Fencing already makes the database refuse a deposed leader's writes; this column lets anyone
-- (and the fault tests) check that no row was written under an old epoch after a takeover.
-- Rows written before this migration keep NULL until the next change.

ALTER TABLE tasks ADD COLUMN IF NOT EXISTS epoch BIGINT UNSIGNED NULL AFTER missing_executors;
ALTER TABLE executors ADD COLUMN IF NOT EXISTS epoch BIGINT UNSIGNED NULL AFTER generation;
ALTER TABLE executor_instances ADD COLUMN IF NOT EXISTS epoch BIGINT UNSIGNED NULL AFTER last_error;
