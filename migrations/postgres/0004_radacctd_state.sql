-- Small key/value state of the server itself. `sweeper_heartbeat`: when the stale-session
-- sweeper last ran (epoch seconds), so that after an outage it can tell sessions that were
-- already stale from sessions whose Interim-Updates were lost while radacctd was down.
CREATE TABLE IF NOT EXISTS radacctd_state (
    name text PRIMARY KEY,
    value bigint NOT NULL
);
