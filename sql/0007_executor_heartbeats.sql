-- Heartbeats of executors outside the cluster (an Executor's spec.endpoints), written by whichever
-- replica received POST /api/v1/executors/{instance_id}/heartbeat and read by the leader's pool,
-- so that a heartbeat costs one row write and no write to the Kubernetes API server.
--
-- An instance id is unique in its namespace: the row also says which Executor it belongs to
-- (the REST API finds the Executor of an instance id here). beat_at is the receiving replica's
-- UTC clock; the leader refuses to lead with a clock far from the database's.

CREATE TABLE IF NOT EXISTS executor_heartbeats (
    namespace      VARCHAR(63)  NOT NULL,
    instance_id    VARCHAR(63)  NOT NULL,
    executor_name  VARCHAR(253) NOT NULL,
    beat_at        DATETIME(3)  NOT NULL,
    PRIMARY KEY (namespace, instance_id),
    INDEX ix_executor_heartbeats_executor (namespace, executor_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
