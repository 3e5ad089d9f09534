-- A log of the run changes made outside the leader (callbacks applied by any replica), read by
-- the leader with a cursor so that it learns of results without re-reading its open runs.
--
-- seq is assigned at insert and rows become visible at commit, so a reader may see seq 12
-- before seq 11: the leader keeps such gaps open for a while (cadenza.core.changes). Rows are
-- only ever appended; the leader deletes old ones in batches.

CREATE TABLE IF NOT EXISTS run_changes (
    seq            BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    execution_id   BIGINT UNSIGNED NOT NULL,
    created_at     DATETIME(3)  NOT NULL,
    PRIMARY KEY (seq),
    INDEX ix_run_changes_created_at (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
