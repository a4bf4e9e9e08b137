-- 0004_sessions: session tracking. A session is a period during which a
-- config's client really talks to the server, seen from the device's
-- handshakes and receive counter; see the README ("Sessions").
--
-- Per config, what the tracker keeps between polls (so a restart continues
-- where the last poll left off): the latest handshake and last activity
-- seen, the device counters of the last poll (the base of the next deltas)
-- and the cumulative traffic across counter resets, and the last endpoint.
ALTER TABLE peers ADD COLUMN last_handshake INTEGER;
ALTER TABLE peers ADD COLUMN last_active INTEGER;
ALTER TABLE peers ADD COLUMN rx_base INTEGER NOT NULL DEFAULT 0 CHECK (rx_base >= 0);
ALTER TABLE peers ADD COLUMN tx_base INTEGER NOT NULL DEFAULT 0 CHECK (tx_base >= 0);
ALTER TABLE peers ADD COLUMN bytes_in INTEGER NOT NULL DEFAULT 0 CHECK (bytes_in >= 0);
ALTER TABLE peers ADD COLUMN bytes_out INTEGER NOT NULL DEFAULT 0 CHECK (bytes_out >= 0);
ALTER TABLE peers ADD COLUMN endpoint TEXT;

-- One row per session; the config's identity is copied in, since the peer
-- row goes away. ended_at NULL: open (at most one per config). endpoints:
-- every endpoint seen, in order, separated by spaces. notify: its start was
-- recorded as a session C event, so its end gets a session D event.
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    public_key  TEXT    NOT NULL,
    interface   TEXT    NOT NULL,
    profile_id  TEXT    NOT NULL,
    user_id     TEXT    NOT NULL,
    ip_four     TEXT,
    ip_six      TEXT,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    end_reason  TEXT    NOT NULL DEFAULT '',
    endpoint    TEXT    NOT NULL DEFAULT '',
    endpoints   TEXT    NOT NULL DEFAULT '',
    bytes_in    INTEGER NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out   INTEGER NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    notify      INTEGER NOT NULL DEFAULT 0 CHECK (notify IN (0, 1))
) STRICT;

CREATE UNIQUE INDEX sessions_open ON sessions (public_key) WHERE ended_at IS NULL;
CREATE INDEX sessions_key ON sessions (public_key, started_at);
CREATE INDEX sessions_user ON sessions (user_id, started_at);

-- Session events share the outbox with config events: scope says which
-- script runs them (config: hooks.script; session: sessions.script).
-- rx_base/tx_base: the config's counter bases when its D was recorded, so
-- the counters read from the device just before the removal are added to
-- the persisted totals (bytes_in/bytes_out) as deltas.
ALTER TABLE events ADD COLUMN scope TEXT NOT NULL DEFAULT 'config' CHECK (scope IN ('config', 'session'));
ALTER TABLE events ADD COLUMN rx_base INTEGER NOT NULL DEFAULT 0 CHECK (rx_base >= 0);
ALTER TABLE events ADD COLUMN tx_base INTEGER NOT NULL DEFAULT 0 CHECK (tx_base >= 0);
ALTER TABLE events ADD COLUMN session_id INTEGER;
