package migrations

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestListEmbedded(t *testing.T) {
	ms, err := List(FS)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || ms[0].Version != 1 || ms[0].Name != "init" {
		t.Fatalf("first migration = %+v, want version 1 named init", ms)
	}
	for _, m := range ms {
		if strings.Contains(strings.ToUpper(m.SQL), "BEGIN TRANSACTION") || strings.Contains(strings.ToUpper(m.SQL), "COMMIT") {
			t.Errorf("migration %04d_%s holds its own transaction statements", m.Version, m.Name)
		}
	}
	latest, err := Latest()
	if err != nil {
		t.Fatal(err)
	}
	if latest != ms[len(ms)-1].Version {
		t.Errorf("Latest() = %d, want %d", latest, ms[len(ms)-1].Version)
	}
}

func TestListOrdersAndRejects(t *testing.T) {
	good := fstest.MapFS{
		"0002_b.sql": {Data: []byte("two")},
		"0001_a.sql": {Data: []byte("one")},
		"README":     {Data: []byte("ignored")},
	}
	ms, err := List(good)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != "a" || ms[1].Name != "b" || ms[1].SQL != "two" {
		t.Fatalf("List = %+v", ms)
	}

	tests := []struct {
		name string
		fs   fstest.MapFS
		want string
	}{
		{"gap", fstest.MapFS{"0001_a.sql": {}, "0003_c.sql": {}}, "expected version 2, found 0003_c.sql"},
		{"duplicate", fstest.MapFS{"0001_a.sql": {}, "0001_b.sql": {}}, "version 1 appears twice"},
		{"starts at two", fstest.MapFS{"0002_a.sql": {}}, "expected version 1, found 0002_a.sql"},
		{"bad name", fstest.MapFS{"01_a.sql": {}}, `migration file "01_a.sql": name must be NNNN_name.sql`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := List(tt.fs)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("List error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseName(t *testing.T) {
	tests := []struct {
		file    string
		version int
		name    string
		err     string
	}{
		{"0001_init.sql", 1, "init", ""},
		{"0042_add_index2.sql", 42, "add_index2", ""},
		{"0000_zero.sql", 0, "", "version 0000 is not allowed"},
		{"000a_x.sql", 0, "", `version "000a" is not four digits`},
		{"0001-init.sql", 0, "", "name must be NNNN_name.sql"},
		{"0001_.sql", 0, "", "name must be NNNN_name.sql"},
		{"0001_Init.sql", 0, "", `name "Init" may hold only a-z, 0-9 and _`},
		{"0001_init.txt", 0, "", "name must be NNNN_name.sql"},
	}
	for _, tt := range tests {
		v, n, err := ParseName(tt.file)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseName(%q) error = %v, want %q", tt.file, err, tt.err)
			}
			continue
		}
		if err != nil || v != tt.version || n != tt.name {
			t.Errorf("ParseName(%q) = %d, %q, %v; want %d, %q", tt.file, v, n, err, tt.version, tt.name)
		}
	}
}

func FuzzParseName(f *testing.F) {
	for _, s := range []string{"0001_init.sql", "9999_z.sql", "", "0001_.sql", "abcd_e.sql", "0001_\xff.sql"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, file string) {
		v, n, err := ParseName(file)
		if err != nil {
			if !strings.Contains(err.Error(), "migration file") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if v < 1 || v > 9999 || n == "" {
			t.Fatalf("ParseName(%q) = %d, %q accepted", file, v, n)
		}
	})
}
