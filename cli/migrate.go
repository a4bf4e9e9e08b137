package cli

import (
	"flag"
	"fmt"
	"io"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
)

func cmdMigrate(e *env, args []string) error {
	fs := newFlags("migrate")
	if err := parseFlags(e, fs, args, "migrate",
		"Open the database, creating it (mode 0600) when missing, check it with\nPRAGMA quick_check, and apply the schema migrations this wgkeeper knows.\nWith a PostgreSQL URL: apply the schema to the (existing) database.\nPrints the schema version. Only migrate and daemon create a database.",
		"wgkeeper -config /etc/wgkeeper/wgkeeper.toml migrate"); err != nil {
		return err
	}
	e.createDB = true
	return e.withStore(func(cfg *config.Config, st store.Store) error {
		v, err := st.SchemaVersion(e.ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "database %s is at schema version %d\n", cfg.DatabaseName(), v)
		return nil
	})
}

// parseFlags parses a subcommand's flags; -h prints its help (with an
// example) to stdout. Leftover arguments are a usage error.
func parseFlags(e *env, fs *flag.FlagSet, args []string, name, help, example string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			fmt.Fprintf(e.stdout, "usage: wgkeeper [-config FILE] %s [flags]\n\n%s\n\nexample:\n  %s\n", name, help, example)
			hasFlags := false
			fs.VisitAll(func(*flag.Flag) { hasFlags = true })
			if hasFlags {
				fmt.Fprintln(e.stdout, "\nflags:")
				fs.SetOutput(e.stdout)
				fs.PrintDefaults()
				fs.SetOutput(io.Discard)
			}
			return flag.ErrHelp
		}
		return usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}
