-- 0002_connect_started: when a C event's connect script was started.
--
-- started_at is set just before the connect script of a create is started
-- (NULL: it never was). A config left pending by a crash is cleaned without
-- a D event when its script never started (the script never saw its C),
-- and with a D event ("outcome unknown") when it did.
ALTER TABLE events ADD COLUMN started_at INTEGER;

-- Connect events written before this column existed: their scripts may
-- well have run, so they count as started.
UPDATE events SET started_at = created_at WHERE event = 'C';
