package cli

import (
	"fmt"
	"log/slog"

	"github.com/wgkeeper/wgkeeper/config"
	"github.com/wgkeeper/wgkeeper/store"
)

// loadConfig reads and validates the config file named by -config.
func (e *env) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(e.configPath)
	if err != nil {
		return nil, fmt.Errorf("config %s:\n%w", e.configPath, err)
	}
	return cfg, nil
}

// openStore opens (creating and migrating when needed) the database.
func (e *env) openStore(cfg *config.Config, log *slog.Logger) (*store.Store, error) {
	st, err := store.Open(e.ctx, cfg.Database, store.Options{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", cfg.Database, err)
	}
	return st, nil
}
