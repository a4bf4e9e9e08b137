-- 0003_create_calls: the steps of a create as server-side functions, so
-- that each costs one round trip instead of one per statement (a create
-- used to take eighteen). They take the same locks in the same order as
-- the statements they replace, and each runs as one statement: in READ
-- COMMITTED every statement inside a plpgsql function sees what was
-- committed before it started, so the per-user count and the free-index
-- lookup made after the pool row is locked are exact, on any node.

-- wgk_addr_text is an address as the program writes it (Go's netip form,
-- RFC 5952): host() prints an address of ::/96 as a dotted quad, which Go
-- does only for ::ffff:0:0/96.
CREATE FUNCTION wgk_addr_text(a inet) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT CASE
        WHEN family(a) = 6 AND a <<= '::/96'::inet THEN
            CASE
                WHEN a - '::'::inet = 0 THEN '::'
                WHEN (a - '::'::inet) >> 16 = 0 THEN '::' || to_hex(a - '::'::inet)
                ELSE '::' || to_hex((a - '::'::inet) >> 16) || ':' || to_hex((a - '::'::inet) & 65535)
            END
        ELSE host(a)
    END
$$;

-- wgk_insert_pending is InsertPending's transaction: lock the profile's
-- pool row (created if missing), refuse a stored key, count the user's
-- configs against max_per_user (0: no limit), take the lowest free host
-- index at or above 0 outside the avoided spans (avoid_lo[i]..avoid_hi[i],
-- sorted and disjoint), and insert the pending peer and its running C
-- event. outcome is 'created' (with the index, the addresses and the
-- event's id), 'key_in_use', 'limit' (held: the user's count),
-- 'exhausted' or 'address_in_use' (the address another profile's peer
-- holds in ip_four or ip_six); nothing is written but for 'created'. A unique violation
-- (a key inserted since the check, an address another profile holds)
-- raises, and the whole call is undone.
CREATE FUNCTION wgk_insert_pending(
    p_key text, p_iface text, p_profile text, p_user text, p_display text,
    p_net4 inet, p_net6 inet, p_psk text, p_orig text, p_created bigint, p_expires bigint,
    p_actor text, p_max_per_user integer, p_capacity bigint, p_avoid_lo bigint[], p_avoid_hi bigint[],
    OUT outcome text, OUT held integer, OUT ip_index bigint, OUT ip_four text, OUT ip_six text, OUT event_id bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    idx bigint;
    from_idx bigint := 0;
    skip_to bigint;
BEGIN
    -- The lock of the pool: a row lock, not an update (an update would
    -- leave a dead version of this one hot row behind every create).
    INSERT INTO ip_pools (interface, profile_id, next_index) VALUES (p_iface, p_profile, 0)
        ON CONFLICT (interface, profile_id) DO NOTHING;
    PERFORM 1 FROM ip_pools WHERE interface = p_iface AND profile_id = p_profile FOR UPDATE;
    IF EXISTS (SELECT 1 FROM peers WHERE public_key = p_key) THEN
        outcome := 'key_in_use';
        RETURN;
    END IF;
    IF p_max_per_user > 0 THEN
        SELECT count(*) INTO held FROM peers
         WHERE user_id = p_user AND interface = p_iface AND profile_id = p_profile;
        IF held >= p_max_per_user THEN
            outcome := 'limit';
            RETURN;
        END IF;
    END IF;
    LOOP
        SELECT coalesce(
            (SELECT min(f.ip_index) FROM ip_free f
              WHERE f.interface = p_iface AND f.profile_id = p_profile AND f.ip_index >= from_idx),
            greatest((SELECT next_index FROM ip_pools WHERE interface = p_iface AND profile_id = p_profile), from_idx))
          INTO idx;
        SELECT s.hi INTO skip_to FROM unnest(p_avoid_lo, p_avoid_hi) AS s(lo, hi)
         WHERE s.lo <= idx AND idx <= s.hi;
        EXIT WHEN NOT FOUND;
        from_idx := skip_to + 1;
    END LOOP;
    IF idx >= p_capacity THEN
        outcome := 'exhausted';
        RETURN;
    END IF;
    ip_index := idx;
    ip_four := wgk_addr_text(p_net4 + (idx + 2));
    ip_six := wgk_addr_text(p_net6 + (idx + 2));
    -- Only overlapping profiles (which the configuration refuses) share an
    -- address; the unique indexes stay the guard for a race of two.
    IF EXISTS (SELECT 1 FROM peers WHERE interface = p_iface AND peers.ip_four = wgk_insert_pending.ip_four) THEN
        outcome := 'address_in_use';
        ip_six := NULL;
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM peers WHERE interface = p_iface AND peers.ip_six = wgk_insert_pending.ip_six) THEN
        outcome := 'address_in_use';
        ip_four := NULL;
        RETURN;
    END IF;
    INSERT INTO peers (public_key, interface, profile_id, user_id, display_name, ip_index,
        ip_four, ip_six, preshared_key, originating_ip, state, created_at, expires_at)
    VALUES (p_key, p_iface, p_profile, p_user, p_display, idx,
        ip_four, ip_six, p_psk, p_orig, 'pending', p_created, p_expires);
    INSERT INTO events (event, reason, public_key, interface, profile_id, user_id,
        ip_four, ip_six, originating_ip, expires_at, created_at, status, actor, scope)
    VALUES ('C', 'created', p_key, p_iface, p_profile, p_user,
        ip_four, ip_six, p_orig, p_expires, p_created, 'running', p_actor, 'config')
    RETURNING id INTO event_id;
    outcome := 'created';
END
$$;

-- wgk_connect_started is MarkConnectStarted: with the peer's row locked
-- against a delete, record in its running C event that the connect
-- script starts. outcome: 'started' (also when already recorded),
-- 'no_peer', 'not_pending' (state: the peer's), 'unmatched' (the event is
-- not the peer's running C event).
CREATE FUNCTION wgk_connect_started(p_key text, p_event bigint, p_now bigint, OUT outcome text, OUT state text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    SELECT p.state INTO state FROM peers p WHERE p.public_key = p_key FOR SHARE;
    IF NOT FOUND THEN
        outcome := 'no_peer';
        RETURN;
    END IF;
    IF state <> 'pending' THEN
        outcome := 'not_pending';
        RETURN;
    END IF;
    UPDATE events SET started_at = coalesce(started_at, p_now)
     WHERE id = p_event AND event = 'C' AND public_key = p_key AND status = 'running';
    IF NOT FOUND THEN
        outcome := 'unmatched';
        RETURN;
    END IF;
    outcome := 'started';
END
$$;

-- wgk_activate is Activate: with the peer's row locked (peers before
-- events, the order a delete takes), mark its running C event done and the
-- peer active. outcome: 'activated', 'already' (active, its C event done),
-- 'no_peer', 'unmatched'.
CREATE FUNCTION wgk_activate(p_key text, p_event bigint, p_done bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    st text;
BEGIN
    SELECT state INTO st FROM peers WHERE public_key = p_key FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN 'no_peer';
    END IF;
    UPDATE events SET status = 'done', done_at = p_done, attempts = attempts + 1
     WHERE id = p_event AND event = 'C' AND public_key = p_key AND status = 'running';
    IF NOT FOUND THEN
        IF st = 'active' AND EXISTS (SELECT 1 FROM events
             WHERE id = p_event AND event = 'C' AND public_key = p_key AND status = 'done') THEN
            RETURN 'already';
        END IF;
        RETURN 'unmatched';
    END IF;
    UPDATE peers SET state = 'active' WHERE public_key = p_key;
    RETURN 'activated';
END
$$;
