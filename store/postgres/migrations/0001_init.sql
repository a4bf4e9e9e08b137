-- 0001_init: wgkeeper's schema on PostgreSQL. The same data as the SQLite
-- schema (its migrations 0001 and 0002): the desired state (peers), the
-- address allocator (ip_pools, ip_free), the event outbox and connection log
-- (events); and what many nodes sharing one database need: the nodes, the
-- interfaces and profiles each declares, and change notification.
--
-- Conventions (as in the SQLite schema, so both backends store the same
-- values):
--   times      bigint nanoseconds since the Unix epoch (UTC); NULL = never/unset
--   keys       text, standard base64 of 32 bytes (44 characters)
--   addresses  text, canonical form (10.42.0.7, fd42::7); NULL = none
--   node       a node's name (the top-level `node` key); '' = none
--
-- Concurrency: every allocation in a profile's pool locks that pool's row in
-- ip_pools (SELECT ... FOR UPDATE, and the insert trigger below takes the
-- same lock whoever inserts), so the per-user count and the lowest free
-- index are read and written by one transaction at a time per pool, on any
-- node. The unique indexes on peers are the last guard.

-- The nodes sharing this database: one row per `node` name, kept fresh by
-- its daemon's heartbeat.
CREATE TABLE nodes (
    name        text   NOT NULL PRIMARY KEY CHECK (name <> ''),
    started_at  bigint NOT NULL,  -- when its daemon last registered
    last_seen   bigint NOT NULL,  -- its last heartbeat
    version     text   NOT NULL DEFAULT '',
    dead_since  bigint            -- set by the cluster job when the heartbeat stopped
);

-- Which node declares each interface: an interface name belongs to one node
-- in the whole database, and so does every profile on it and every config.
CREATE TABLE node_interfaces (
    interface     text   NOT NULL PRIMARY KEY,
    node          text   NOT NULL REFERENCES nodes (name) ON DELETE CASCADE,
    registered_at bigint NOT NULL
);
CREATE INDEX node_interfaces_node ON node_interfaces (node);

-- The profiles each node declares, with their ranges, so that a node whose
-- ranges overlap another node's is refused at start.
CREATE TABLE node_profiles (
    interface  text NOT NULL REFERENCES node_interfaces (interface) ON DELETE CASCADE,
    profile_id text NOT NULL,
    ipv4_range cidr CHECK (family(ipv4_range) = 4),
    ipv6_range cidr CHECK (family(ipv6_range) = 6),
    PRIMARY KEY (interface, profile_id),
    CHECK (ipv4_range IS NOT NULL OR ipv6_range IS NOT NULL)
);

-- The node that declares iface, '' when none does.
CREATE FUNCTION wgk_node_of(iface text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT node FROM node_interfaces WHERE interface = iface), '')
$$;

CREATE TABLE peers (
    public_key     text   NOT NULL PRIMARY KEY,
    interface      text   NOT NULL,
    profile_id     text   NOT NULL,
    user_id        text   NOT NULL,
    display_name   text   NOT NULL DEFAULT '',
    -- host index i: ip_four = net4 + 2 + i, ip_six = net6 + 2 + i
    ip_index       bigint NOT NULL CHECK (ip_index >= 0),
    ip_four        text,
    ip_six         text,
    preshared_key  text,
    originating_ip text,
    state          text   NOT NULL CHECK (state IN ('pending', 'active')),
    created_at     bigint NOT NULL,
    expires_at     bigint,
    CHECK (ip_four IS NOT NULL OR ip_six IS NOT NULL)
);

-- Profiles on one interface never overlap, so an index is unique per
-- (interface, profile) and each address is unique per interface.
CREATE UNIQUE INDEX peers_pool ON peers (interface, profile_id, ip_index);
CREATE UNIQUE INDEX peers_ip_four ON peers (interface, ip_four) WHERE ip_four IS NOT NULL;
CREATE UNIQUE INDEX peers_ip_six ON peers (interface, ip_six) WHERE ip_six IS NOT NULL;
CREATE INDEX peers_user ON peers (user_id, interface, profile_id);
CREATE INDEX peers_expiry ON peers (state, expires_at);

-- Address allocator. For each (interface, profile): every index below
-- next_index is either held by a peer or listed in ip_free, so the lowest
-- free index is min(ip_free) or else next_index, found in O(log n). The
-- pool row is also the lock of the pool (see above). The triggers keep
-- both tables in step with peers, whoever changes the rows.
CREATE TABLE ip_pools (
    interface  text   NOT NULL,
    profile_id text   NOT NULL,
    next_index bigint NOT NULL CHECK (next_index >= 0),
    PRIMARY KEY (interface, profile_id)
);

CREATE TABLE ip_free (
    interface  text   NOT NULL,
    profile_id text   NOT NULL,
    ip_index   bigint NOT NULL CHECK (ip_index >= 0),
    PRIMARY KEY (interface, profile_id, ip_index)
);

-- wgk_pool_take records that (iface, profile, idx) is held: the pool row is
-- created if missing and locked; a row inserted above the high-water mark
-- (by hand, or an import of existing configs) leaves the indexes it skipped
-- on the free list (at most 2^20 of them, more than any IPv4 range holds).
CREATE FUNCTION wgk_pool_take(iface text, profile text, idx bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    hw bigint;
BEGIN
    INSERT INTO ip_pools (interface, profile_id, next_index) VALUES (iface, profile, 0)
        ON CONFLICT (interface, profile_id) DO NOTHING;
    SELECT next_index INTO hw FROM ip_pools
     WHERE interface = iface AND profile_id = profile FOR UPDATE;
    IF idx > hw THEN
        INSERT INTO ip_free (interface, profile_id, ip_index)
        SELECT iface, profile, i FROM generate_series(hw, least(idx, hw + 1048576) - 1) AS i
            ON CONFLICT DO NOTHING;
    END IF;
    DELETE FROM ip_free WHERE interface = iface AND profile_id = profile AND ip_index = idx;
    IF idx >= hw THEN
        UPDATE ip_pools SET next_index = idx + 1 WHERE interface = iface AND profile_id = profile;
    END IF;
END
$$;

CREATE FUNCTION wgk_peers_pool() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        INSERT INTO ip_free (interface, profile_id, ip_index)
        VALUES (OLD.interface, OLD.profile_id, OLD.ip_index)
            ON CONFLICT DO NOTHING;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM wgk_pool_take(NEW.interface, NEW.profile_id, NEW.ip_index);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER peers_pool_take AFTER INSERT ON peers
    FOR EACH ROW EXECUTE FUNCTION wgk_peers_pool();
CREATE TRIGGER peers_pool_free AFTER DELETE ON peers
    FOR EACH ROW EXECUTE FUNCTION wgk_peers_pool();
CREATE TRIGGER peers_pool_move AFTER UPDATE OF interface, profile_id, ip_index ON peers
    FOR EACH ROW WHEN (OLD.interface IS DISTINCT FROM NEW.interface
                    OR OLD.profile_id IS DISTINCT FROM NEW.profile_id
                    OR OLD.ip_index IS DISTINCT FROM NEW.ip_index)
    EXECUTE FUNCTION wgk_peers_pool();

-- One row per C (connect) or D (disconnect) event: the outbox the deliverer
-- works through and, through its C/D pairs, the log of who held which
-- address when. The peer's identity is copied in, since the peer row goes
-- away; node is the node that declared the interface when the event was
-- recorded: only that node's daemon delivers it (its firewall's event).
-- An identity column: an id is never reused after pruning (scripts
-- deduplicate on it).
CREATE TABLE events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event           text   NOT NULL CHECK (event IN ('C', 'D')),
    reason          text   NOT NULL,
    public_key      text   NOT NULL,
    interface       text   NOT NULL,
    profile_id      text   NOT NULL,
    user_id         text   NOT NULL,
    ip_four         text,
    ip_six          text,
    originating_ip  text,
    expires_at      bigint,
    bytes_in        bigint NOT NULL DEFAULT 0 CHECK (bytes_in >= 0),
    bytes_out       bigint NOT NULL DEFAULT 0 CHECK (bytes_out >= 0),
    created_at      bigint NOT NULL,
    -- running: a C event whose connect script is running (never delivered
    -- by the outbox); pending: to deliver; done; failed: gave up after max
    -- attempts.
    status          text   NOT NULL CHECK (status IN ('running', 'pending', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at bigint,
    last_error      text   NOT NULL DEFAULT '',
    done_at         bigint,
    lease_owner     text   NOT NULL DEFAULT '',
    lease_until     bigint,
    -- when a C event's connect script was started (NULL: it never was)
    started_at      bigint,
    -- who made the change: "api:admin@ADDRESS", "api:read@ADDRESS",
    -- "cli:UID" or "daemon"; NULL: not recorded
    actor           text,
    node            text   NOT NULL DEFAULT ''
);

CREATE INDEX events_status ON events (status, next_attempt_at);
CREATE INDEX events_due ON events (node, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX events_done ON events (done_at) WHERE status = 'done';
CREATE INDEX events_key ON events (public_key, event, id);
CREATE INDEX events_user ON events (user_id, event, id);
CREATE INDEX events_ip_four ON events (ip_four, created_at) WHERE ip_four IS NOT NULL;
CREATE INDEX events_ip_six ON events (ip_six, created_at) WHERE ip_six IS NOT NULL;

-- An event is its interface's node's, unless the writer named one.
CREATE FUNCTION wgk_events_node() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.node = '' THEN
        NEW.node := wgk_node_of(NEW.interface);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_node BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION wgk_events_node();

-- Change notification. Every change to peers or events notifies the channel
-- "wgkeeper" and, when the row belongs to a node, that node's channel
-- "wgkeeper:NODE"; PostgreSQL sends them at commit, folding repeats within
-- a transaction into one. A daemon listens on its node's channel and so
-- wakes at once when another node deletes one of its configs.
-- wgk_changes counts changed rows: a handle's cheap "has anything
-- changed" looks at its last value (sequences are not transactional, so
-- the count moves without waiting for anyone's commit).
CREATE SEQUENCE wgk_changes AS bigint CYCLE;

CREATE FUNCTION wgk_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    n text;
BEGIN
    PERFORM nextval('wgk_changes');
    PERFORM pg_notify('wgkeeper', '');
    IF TG_TABLE_NAME = 'events' THEN
        IF TG_OP = 'DELETE' THEN n := OLD.node; ELSE n := NEW.node; END IF;
    ELSIF TG_OP = 'DELETE' THEN
        n := wgk_node_of(OLD.interface);
    ELSE
        n := wgk_node_of(NEW.interface);
    END IF;
    IF n <> '' THEN
        PERFORM pg_notify('wgkeeper:' || n, '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER peers_notify AFTER INSERT OR UPDATE OR DELETE ON peers
    FOR EACH ROW EXECUTE FUNCTION wgk_notify();
CREATE TRIGGER events_notify AFTER INSERT OR UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION wgk_notify();
