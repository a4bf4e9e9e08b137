-- 0002_sessions: session tracking, the same data as the SQLite schema's
-- migration 0004: per config the tracker's activity (latest handshake, last
-- activity, counter bases, cumulative traffic, last endpoint); one row per
-- session; session events in the outbox (scope), and in a config's D the
-- counter bases its totals were brought up to.
ALTER TABLE peers ADD COLUMN last_handshake bigint;
ALTER TABLE peers ADD COLUMN last_active bigint;
ALTER TABLE peers ADD COLUMN rx_base bigint NOT NULL DEFAULT 0 CHECK (rx_base >= 0);
ALTER TABLE peers ADD COLUMN tx_base bigint NOT NULL DEFAULT 0 CHECK (tx_base >= 0);
ALTER TABLE peers ADD COLUMN bytes_in bigint NOT NULL DEFAULT 0 CHECK (bytes_in >= 0);
ALTER TABLE peers ADD COLUMN bytes_out bigint NOT NULL DEFAULT 0 CHECK (bytes_out >= 0);
ALTER TABLE peers ADD COLUMN endpoint text;

-- The activity columns change at every poll of a talking client: they are
-- no change of the desired state, so they notify nobody.
DROP TRIGGER peers_notify ON peers;
CREATE TRIGGER peers_notify AFTER INSERT OR DELETE OR UPDATE OF public_key, interface, profile_id, user_id,
    display_name, ip_index, ip_four, ip_six, preshared_key, originating_ip, state, created_at, expires_at ON peers
    FOR EACH ROW EXECUTE FUNCTION wgk_notify();

-- ended_at NULL: open (at most one per config); endpoints: every endpoint
-- seen, in order, separated by spaces; notify: its start was recorded as a
-- session C event, so its end gets a session D event.
CREATE TABLE sessions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_key  text   NOT NULL,
    interface   text   NOT NULL,
    profile_id  text   NOT NULL,
    user_id     text   NOT NULL,
    ip_four     text,
    ip_six      text,
    started_at  bigint NOT NULL,
    ended_at    bigint,
    end_reason  text   NOT NULL DEFAULT '',
    endpoint    text   NOT NULL DEFAULT '',
    endpoints   text   NOT NULL DEFAULT '',
    bytes_in    bigint NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out   bigint NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    notify      boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX sessions_open ON sessions (public_key) WHERE ended_at IS NULL;
CREATE INDEX sessions_key ON sessions (public_key, started_at);
CREATE INDEX sessions_user ON sessions (user_id, started_at);

ALTER TABLE events ADD COLUMN scope text NOT NULL DEFAULT 'config' CHECK (scope IN ('config', 'session'));
ALTER TABLE events ADD COLUMN rx_base bigint NOT NULL DEFAULT 0 CHECK (rx_base >= 0);
ALTER TABLE events ADD COLUMN tx_base bigint NOT NULL DEFAULT 0 CHECK (tx_base >= 0);
ALTER TABLE events ADD COLUMN session_id bigint;
