-- The mirror of the Task and Executor resources, written only by the leader.
--
-- Kubernetes is the source of truth; these rows are a copy the scheduler and the REST API can
-- query. Rows are keyed by the resource's metadata.uid, so a Task deleted and created again
-- under the same name is a new row. Deleting a Task removes its mirror rows but never its
-- execution history (task_executions has no foreign key to tasks).

CREATE TABLE IF NOT EXISTS tasks (
    uid                   CHAR(36)     NOT NULL,
    namespace             VARCHAR(63)  NOT NULL,
    name                  VARCHAR(253) NOT NULL,
    -- the original system's name (annotation cadenza.dev/original-name), e.g. test_task
    original_name         VARCHAR(255) NULL,
    generation            BIGINT       NOT NULL,
    -- spec.schedule, under the original system's column name
    cron_expression       VARCHAR(256) NOT NULL,
    time_zone             VARCHAR(64)  NOT NULL,
    suspend               BOOL         NOT NULL,
    execution_mode        VARCHAR(16)  NOT NULL,
    load_balance_strategy VARCHAR(16)  NOT NULL,
    handler               VARCHAR(253) NOT NULL,
    timeout_seconds       INT          NOT NULL,
    -- the whole spec as applied
    spec                  JSON         NOT NULL,
    -- sha256 of the spec and the annotations that matter: equal hash, nothing to rewrite
    spec_hash             CHAR(64)     NOT NULL,
    valid                 BOOL         NOT NULL,
    invalid_reason        TEXT         NULL,
    -- names in spec.executors with no Executor of that name in the namespace
    missing_executors     JSON         NOT NULL,
    created_at            DATETIME(3)  NOT NULL,
    updated_at            DATETIME(3)  NOT NULL,
    PRIMARY KEY (uid),
    UNIQUE KEY uq_tasks_namespace_name (namespace, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS executors (
    uid         CHAR(36)     NOT NULL,
    namespace   VARCHAR(63)  NOT NULL,
    name        VARCHAR(253) NOT NULL,
    -- spec.selector: a Kubernetes label selector over Pods
    selector    JSON         NOT NULL,
    port        INT          NOT NULL,
    scheme      VARCHAR(8)   NOT NULL,
    spec        JSON         NOT NULL,
    spec_hash   CHAR(64)     NOT NULL,
    generation  BIGINT       NOT NULL,
    created_at  DATETIME(3)  NOT NULL,
    updated_at  DATETIME(3)  NOT NULL,
    PRIMARY KEY (uid),
    UNIQUE KEY uq_executors_namespace_name (namespace, name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The pods of an executor (a pod may belong to several executors). The pod's fields come from
-- Kubernetes; healthy, in_flight, last_probe_at and last_error are the leader's own findings.
CREATE TABLE IF NOT EXISTS executor_instances (
    executor_uid  CHAR(36)     NOT NULL,
    pod_uid       CHAR(36)     NOT NULL,
    pod_name      VARCHAR(253) NOT NULL,
    namespace     VARCHAR(63)  NOT NULL,
    ip            VARCHAR(45)  NULL,
    phase         VARCHAR(16)  NOT NULL,
    ready         BOOL         NOT NULL,
    healthy       BOOL         NULL,
    in_flight     INT          NOT NULL DEFAULT 0,
    last_probe_at DATETIME(3)  NULL,
    last_error    TEXT         NULL,
    updated_at    DATETIME(3)  NOT NULL,
    PRIMARY KEY (executor_uid, pod_uid),
    KEY ix_executor_instances_pod_uid (pod_uid),
    CONSTRAINT fk_executor_instances_executor_uid FOREIGN KEY (executor_uid)
        REFERENCES executors (uid) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- spec.executors of each Task: executors are referenced by name because the Executor may not
-- exist yet; executor_uid is filled in while it does.
CREATE TABLE IF NOT EXISTS task_executors (
    task_uid      CHAR(36)     NOT NULL,
    executor_name VARCHAR(253) NOT NULL,
    executor_uid  CHAR(36)     NULL,
    weight        INT          NOT NULL,
    priority      INT          NOT NULL,
    -- index in spec.executors, to read the list back in its order
    position      INT          NOT NULL,
    PRIMARY KEY (task_uid, executor_name),
    KEY ix_task_executors_executor_name (executor_name),
    KEY ix_task_executors_executor_uid (executor_uid),
    CONSTRAINT fk_task_executors_task_uid FOREIGN KEY (task_uid)
        REFERENCES tasks (uid) ON DELETE CASCADE,
    CONSTRAINT fk_task_executors_executor_uid FOREIGN KEY (executor_uid)
        REFERENCES executors (uid) ON DELETE SET NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
