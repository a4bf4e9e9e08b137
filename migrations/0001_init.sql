-- 0001_init: the desired state (peers), the event outbox and connection log
-- (events), and the bookkeeping of the address allocator (ip_pools, ip_free).
--
-- Conventions:
--   times      INTEGER nanoseconds since the Unix epoch (UTC); NULL = never/unset
--   keys       TEXT, standard base64 of 32 bytes (44 characters)
--   addresses  TEXT, canonical form (10.42.0.7, fd42::7); NULL = none
-- Tables are STRICT, so a column never holds a value of another type.

CREATE TABLE peers (
    public_key     TEXT    NOT NULL PRIMARY KEY,
    interface      TEXT    NOT NULL,
    profile_id     TEXT    NOT NULL,
    user_id        TEXT    NOT NULL,
    display_name   TEXT    NOT NULL DEFAULT '',
    -- host index i: ip_four = net4 + 2 + i, ip_six = net6 + 2 + i
    ip_index       INTEGER NOT NULL CHECK (ip_index >= 0),
    ip_four        TEXT,
    ip_six         TEXT,
    preshared_key  TEXT,
    originating_ip TEXT,
    state          TEXT    NOT NULL CHECK (state IN ('pending', 'active')),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    CHECK (ip_four IS NOT NULL OR ip_six IS NOT NULL)
) STRICT;

-- Profiles on one interface never overlap, so an index is unique per
-- (interface, profile) and each address is unique per interface.
CREATE UNIQUE INDEX peers_pool ON peers (interface, profile_id, ip_index);
CREATE UNIQUE INDEX peers_ip_four ON peers (interface, ip_four) WHERE ip_four IS NOT NULL;
CREATE UNIQUE INDEX peers_ip_six ON peers (interface, ip_six) WHERE ip_six IS NOT NULL;
CREATE INDEX peers_user ON peers (user_id, interface, profile_id);
CREATE INDEX peers_expiry ON peers (state, expires_at);

-- Address allocator. For each (interface, profile): every index below
-- next_index is either held by a peer or listed in ip_free, so the lowest free
-- index is min(ip_free) or else next_index, found in O(log n). The triggers
-- keep both tables in step with peers, whoever changes the rows.
CREATE TABLE ip_pools (
    interface  TEXT    NOT NULL,
    profile_id TEXT    NOT NULL,
    next_index INTEGER NOT NULL CHECK (next_index >= 0),
    PRIMARY KEY (interface, profile_id)
) STRICT, WITHOUT ROWID;

CREATE TABLE ip_free (
    interface  TEXT    NOT NULL,
    profile_id TEXT    NOT NULL,
    ip_index   INTEGER NOT NULL CHECK (ip_index >= 0),
    PRIMARY KEY (interface, profile_id, ip_index)
) STRICT, WITHOUT ROWID;

-- A row inserted above the high-water mark (by hand, or an import of existing
-- configs) leaves the indexes it skipped on the free list (at most 2^20 of
-- them, more than any IPv4 range holds).
CREATE TRIGGER peers_pool_take AFTER INSERT ON peers
BEGIN
    INSERT OR IGNORE INTO ip_free (interface, profile_id, ip_index)
    WITH RECURSIVE gap (i, stop) AS (
        SELECT hw, min(NEW.ip_index, hw + 1048576) FROM (
            SELECT coalesce((SELECT next_index FROM ip_pools
                              WHERE interface = NEW.interface AND profile_id = NEW.profile_id), 0) AS hw)
        UNION ALL
        SELECT i + 1, stop FROM gap WHERE i + 1 < stop)
    SELECT NEW.interface, NEW.profile_id, i FROM gap WHERE i < stop;
    DELETE FROM ip_free
     WHERE interface = NEW.interface AND profile_id = NEW.profile_id AND ip_index = NEW.ip_index;
    INSERT INTO ip_pools (interface, profile_id, next_index)
    VALUES (NEW.interface, NEW.profile_id, NEW.ip_index + 1)
        ON CONFLICT (interface, profile_id) DO UPDATE SET next_index = max(next_index, excluded.next_index);
END;

CREATE TRIGGER peers_pool_free AFTER DELETE ON peers
BEGIN
    INSERT OR IGNORE INTO ip_free (interface, profile_id, ip_index)
    VALUES (OLD.interface, OLD.profile_id, OLD.ip_index);
END;

CREATE TRIGGER peers_pool_move AFTER UPDATE OF interface, profile_id, ip_index ON peers
BEGIN
    INSERT OR IGNORE INTO ip_free (interface, profile_id, ip_index)
    VALUES (OLD.interface, OLD.profile_id, OLD.ip_index);
    INSERT OR IGNORE INTO ip_free (interface, profile_id, ip_index)
    WITH RECURSIVE gap (i, stop) AS (
        SELECT hw, min(NEW.ip_index, hw + 1048576) FROM (
            SELECT coalesce((SELECT next_index FROM ip_pools
                              WHERE interface = NEW.interface AND profile_id = NEW.profile_id), 0) AS hw)
        UNION ALL
        SELECT i + 1, stop FROM gap WHERE i + 1 < stop)
    SELECT NEW.interface, NEW.profile_id, i FROM gap WHERE i < stop;
    DELETE FROM ip_free
     WHERE interface = NEW.interface AND profile_id = NEW.profile_id AND ip_index = NEW.ip_index;
    INSERT INTO ip_pools (interface, profile_id, next_index)
    VALUES (NEW.interface, NEW.profile_id, NEW.ip_index + 1)
        ON CONFLICT (interface, profile_id) DO UPDATE SET next_index = max(next_index, excluded.next_index);
END;

-- One row per C (connect) or D (disconnect) event: the outbox the deliverer
-- works through and, through its C/D pairs, the log of who held which address
-- when. The peer's identity is copied in, since the peer row goes away.
-- AUTOINCREMENT: an id is never reused after pruning (scripts deduplicate on it).
CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event           TEXT    NOT NULL CHECK (event IN ('C', 'D')),
    reason          TEXT    NOT NULL,
    public_key      TEXT    NOT NULL,
    interface       TEXT    NOT NULL,
    profile_id      TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    ip_four         TEXT,
    ip_six          TEXT,
    originating_ip  TEXT,
    expires_at      INTEGER,
    bytes_in        INTEGER NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out       INTEGER NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    created_at      INTEGER NOT NULL,
    -- running: a C event whose connect script is running (never delivered by
    -- the outbox); pending: to deliver; done; failed: gave up after max attempts.
    status          TEXT    NOT NULL CHECK (status IN ('running', 'pending', 'done', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at INTEGER,
    last_error      TEXT    NOT NULL DEFAULT '',
    done_at         INTEGER,
    lease_owner     TEXT    NOT NULL DEFAULT '',
    lease_until     INTEGER
) STRICT;

CREATE INDEX events_status ON events (status, next_attempt_at);
CREATE INDEX events_done ON events (done_at) WHERE status = 'done';
CREATE INDEX events_key ON events (public_key, event, id);
CREATE INDEX events_user ON events (user_id, event, id);
CREATE INDEX events_ip_four ON events (ip_four, created_at) WHERE ip_four IS NOT NULL;
CREATE INDEX events_ip_six ON events (ip_six, created_at) WHERE ip_six IS NOT NULL;
