//go:build !unix

package pgmig

import (
	"io/fs"
	"os"
)

// readFile reads dir/name; see the unix version.
func readFile(dir, name string, _ []byte) ([]byte, error) {
	return fs.ReadFile(os.DirFS(dir), name)
}
