package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
)

var newNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// newMigrationText is tern's, so `pgmig new` and `tern new` agree.
const newMigrationText = `-- Write your migrate up statements here

---- create above / drop below ----

-- Write your migrate down statements here. If this migration is irreversible
-- Then delete the separator line above.
`

var migrationFileName = regexp.MustCompile(`\A(\d+)_.+\.sql\z`)

// runNew writes the next numbered migration file. A missing --dir is
// created: the first migration of a project is where the folder starts.
func runNew(_ context.Context, inv *invocation) (result, error) {
	dir, name := inv.opts.dir, inv.args[0]
	res := newResult{}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return nil, err
		}
		res.createdDir = dir
	} else if err != nil {
		return nil, err
	}
	next, width := int64(1), 3
	for _, e := range entries {
		m := migrationFileName.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() {
			continue
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			continue
		}
		if v >= next {
			next = v + 1
		}
		width = max(width, len(m[1]))
	}
	path := filepath.Join(dir, fmt.Sprintf("%0*d_%s.sql", width, next, name))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o666)
	if err != nil {
		return nil, err
	}
	if _, err := f.WriteString(newMigrationText); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	res.path, res.version = path, next
	return res, nil
}
