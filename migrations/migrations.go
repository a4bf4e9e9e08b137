// Package migrations holds wgkeeper's database schema as numbered SQL files
// (NNNN_name.sql), embedded into the binary. The store package applies them in
// order, each in its own transaction, and records every applied version; this
// package only names and orders them and never touches a database.
//
// Rules for new files: never edit a released file, only add the next number;
// no BEGIN/COMMIT inside a file (the store wraps each file in a transaction).
package migrations

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// FS holds every NNNN_name.sql file of the schema.
//
//go:embed *.sql
var FS embed.FS

// Migration is one schema step.
type Migration struct {
	Version int    // NNNN, starting at 1, without gaps
	Name    string // the file name without the version prefix and ".sql"
	SQL     string
}

// List returns the migrations in fsys (normally FS) ordered by version. It
// fails, naming the file, on a file name that is not NNNN_name.sql, on a
// duplicate version, and on a gap in the sequence 1, 2, 3, …
func List(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	var out []Migration
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		version, name, err := ParseName(e.Name())
		if err != nil {
			return nil, err
		}
		data, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: version, Name: name, SQL: string(data)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i, m := range out {
		if m.Version != i+1 {
			if i > 0 && m.Version == out[i-1].Version {
				return nil, fmt.Errorf("list migrations: version %d appears twice (%s and %s)", m.Version, out[i-1].Name, m.Name)
			}
			return nil, fmt.Errorf("list migrations: expected version %d, found %04d_%s.sql", i+1, m.Version, m.Name)
		}
	}
	return out, nil
}

// Latest returns the highest version in FS: the schema this binary knows.
func Latest() (int, error) {
	ms, err := List(FS)
	if err != nil {
		return 0, err
	}
	if len(ms) == 0 {
		return 0, nil
	}
	return ms[len(ms)-1].Version, nil
}

// ParseName splits a migration file name "NNNN_name.sql" into its version
// (four decimal digits, at least 1) and name (lowercase letters, digits and
// underscores). Any other file name is an error naming it.
func ParseName(file string) (version int, name string, err error) {
	base, ok := strings.CutSuffix(file, ".sql")
	if !ok || len(base) < 6 || base[4] != '_' {
		return 0, "", fmt.Errorf("migration file %q: name must be NNNN_name.sql", file)
	}
	digits, name := base[:4], base[5:]
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, "", fmt.Errorf("migration file %q: version %q is not four digits", file, digits)
		}
	}
	version, _ = strconv.Atoi(digits)
	if version == 0 {
		return 0, "", fmt.Errorf("migration file %q: version 0000 is not allowed, numbering starts at 0001", file)
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return 0, "", fmt.Errorf("migration file %q: name %q may hold only a-z, 0-9 and _", file, name)
		}
	}
	return version, name, nil
}
