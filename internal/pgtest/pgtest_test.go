package pgtest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestNewDatabaseIsFreshAndDropped(t *testing.T) {
	ctx := context.Background()
	var name string
	t.Run("db", func(t *testing.T) {
		u := NewDatabase(t)
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(name, "wgkt_testnewdatabaseisfreshanddropped_db_") {
			t.Errorf("database name %q does not name the test", name)
		}
		var tables int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Errorf("fresh database has %d tables", tables)
		}
		// Left open on purpose: the cleanup drops the database anyway.
	})
	if t.Skipped() || name == "" {
		return
	}
	conn, err := pgx.Connect(ctx, ServerURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_database WHERE datname = $1", name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s still exists after its test ended", name)
	}
}

func TestPrivateServerRestart(t *testing.T) {
	s := NewServer(t)
	u := CreateDatabase(t, s.URL())
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var pid1 int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid1); err != nil {
		t.Fatal(err)
	}
	s.Restart(t)
	if err := conn.Ping(ctx); err == nil {
		t.Fatal("a connection survived the restart")
	}
	conn2, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("connect after restart: %v", err)
	}
	defer conn2.Close(ctx)
	s.Stop(t)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if c, err := pgx.Connect(cctx, u); err == nil {
		c.Close(ctx)
		t.Fatal("connected to a stopped server")
	}
	s.Start(t)
	conn3, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("connect after start: %v", err)
	}
	conn3.Close(ctx)
}

func TestDBName(t *testing.T) {
	a, b := dbName("TestX/sub case"), dbName("TestX/sub case")
	if a == b {
		t.Errorf("two names for one test are equal: %s", a)
	}
	if !strings.HasPrefix(a, "wgkt_testx_sub_case_") {
		t.Errorf("name %q", a)
	}
	long := dbName(strings.Repeat("x", 200))
	if len(long) > 63 {
		t.Errorf("name %q is %d bytes, PostgreSQL keeps 63", long, len(long))
	}
}
