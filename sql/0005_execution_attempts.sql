-- One row per attempt of a run: where it went and how it ended.
--
-- task_executions keeps the run's current state (its last attempt); a retry moves the run back
-- to 'queued' and dispatches it again, preferably to another pod. This table keeps every
-- attempt so history shows the whole story. Rows are deleted with their run by retention.

CREATE TABLE IF NOT EXISTS execution_attempts (
    execution_id   BIGINT UNSIGNED NOT NULL,
    attempt        INT          NOT NULL,
    executor_name  VARCHAR(253) NULL,
    pod_name       VARCHAR(253) NULL,
    pod_ip         VARCHAR(45)  NULL,
    -- sha256 of this attempt's callback token: a late callback of an earlier attempt is
    -- recognised (and refused as stale) rather than taken for a forgery
    callback_token_hash CHAR(64) NULL,
    -- running, succeeded, failed, timed_out, cancelled, lost
    status         VARCHAR(16)  NOT NULL,
    dispatched_at  DATETIME(3)  NOT NULL,
    finished_at    DATETIME(3)  NULL,
    error          TEXT         NULL,
    PRIMARY KEY (execution_id, attempt)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
