-- Operator replicas and the leader election's epoch.
--
-- Every replica registers itself in scheduler_instances and heartbeats there; the leader is the
-- replica holding the MySQL lock GET_LOCK('<lock name>'). On taking the lock it bumps the lock's
-- row in leader_epochs, and every leader write checks that epoch (see cadenza/store/fencing.py).
-- Times are UTC.

CREATE TABLE IF NOT EXISTS scheduler_instances (
    instance_id     VARCHAR(64)  NOT NULL,
    host            VARCHAR(255) NOT NULL,
    pid             INT          NOT NULL,
    -- host:port of the replica's HTTP server (REST API, callbacks)
    http_address    VARCHAR(255) NOT NULL,
    -- 'leader' or 'standby'
    role            VARCHAR(16)  NOT NULL,
    -- the epoch it leads with; NULL while standby
    epoch           BIGINT       NULL,
    started_at      DATETIME(3)  NOT NULL,
    last_heartbeat  DATETIME(3)  NOT NULL,
    PRIMARY KEY (instance_id),
    KEY ix_scheduler_instances_last_heartbeat (last_heartbeat)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE IF NOT EXISTS leader_epochs (
    -- the GET_LOCK name the epoch belongs to
    lock_name       VARCHAR(64)     NOT NULL,
    -- bumped by every new leader, on the lock's own session
    epoch           BIGINT UNSIGNED NOT NULL,
    leader_instance VARCHAR(64)     NOT NULL,
    acquired_at     DATETIME(3)     NOT NULL,
    PRIMARY KEY (lock_name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
