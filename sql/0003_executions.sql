-- Execution history and the load balancers' state.
--
-- One task_executions row per run. A scheduled run is claimed by inserting its row: the unique
-- key (task_uid, scheduled_at) lets each cron tick fire at most once, across leader changes, and
-- (task_uid, trigger_key) does the same for a manual trigger. NULLs never collide, so runs
-- without a tick or a trigger key are not limited. Rows outlive their Task.

CREATE TABLE IF NOT EXISTS task_executions (
    id                  BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    task_uid            CHAR(36)     NOT NULL,
    namespace           VARCHAR(63)  NOT NULL,
    task_name           VARCHAR(253) NOT NULL,
    -- the cron tick; NULL for manual and API runs
    scheduled_at        DATETIME(3)  NULL,
    -- dedupe key of a manual trigger (e.g. the annotation's value)
    trigger_key         VARCHAR(191) NULL,
    -- 'schedule', 'misfire', 'manual' or 'api'
    origin              VARCHAR(16)  NOT NULL,
    requested_at        DATETIME(3)  NOT NULL,
    -- claimed, queued, dispatched, running, succeeded, failed, timed_out, cancelled, skipped, lost
    status              VARCHAR(16)  NOT NULL,
    attempt             INT          NOT NULL,
    max_attempts        INT          NOT NULL,
    -- the leader epoch that last wrote the row
    epoch               BIGINT       NOT NULL,
    executor_name       VARCHAR(253) NULL,
    pod_name            VARCHAR(253) NULL,
    pod_ip              VARCHAR(45)  NULL,
    -- sha256 of the per-run callback token; the token itself is never stored
    callback_token_hash CHAR(64)     NULL,
    next_attempt_at     DATETIME(3)  NULL,
    deadline_at         DATETIME(3)  NULL,
    dispatched_at       DATETIME(3)  NULL,
    started_at          DATETIME(3)  NULL,
    finished_at         DATETIME(3)  NULL,
    result              JSON         NULL,
    error               TEXT         NULL,
    exit_code           INT          NULL,
    created_at          DATETIME(3)  NOT NULL,
    updated_at          DATETIME(3)  NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_task_executions_task_uid_scheduled_at (task_uid, scheduled_at),
    UNIQUE KEY uq_task_executions_task_uid_trigger_key (task_uid, trigger_key),
    -- the leader's scans for due work
    KEY ix_task_executions_status_next_attempt_at (status, next_attempt_at),
    -- history, newest first, with cursor pagination by id
    KEY ix_task_executions_task_uid_id (task_uid, id),
    KEY ix_task_executions_namespace_task_name_id (namespace, task_name, id),
    -- retention
    KEY ix_task_executions_finished_at (finished_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Where each Task's load balancer stands (round-robin cursor, sticky pod, ...), so that a new
-- leader continues where the previous one stopped.
CREATE TABLE IF NOT EXISTS load_balance_state (
    task_uid   CHAR(36)    NOT NULL,
    strategy   VARCHAR(16) NOT NULL,
    state      JSON        NOT NULL,
    epoch      BIGINT      NOT NULL,
    updated_at DATETIME(3) NOT NULL,
    PRIMARY KEY (task_uid),
    CONSTRAINT fk_load_balance_state_task_uid FOREIGN KEY (task_uid)
        REFERENCES tasks (uid) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
