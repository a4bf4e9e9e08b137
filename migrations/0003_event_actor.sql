-- 0003_event_actor: who made the change an event records.
--
-- actor is "api:admin@ADDRESS", "api:read@ADDRESS", "cli:UID" or "daemon".
-- NULL: not recorded (events written before this column existed).
ALTER TABLE events ADD COLUMN actor TEXT;
