-- 0005_connect_hold: each node records how long a connect script it
-- started may still run (store.NodeDecl.ConnectHold, nanoseconds), so
-- that a delete made on another node holds the D event of a config whose
-- connect script still runs on its owner at least that long. Nodes
-- registered before keep 0 (nothing added to the deleting node's own
-- hold) until they register again.
ALTER TABLE nodes ADD COLUMN connect_hold bigint NOT NULL DEFAULT 0 CHECK (connect_hold >= 0);
